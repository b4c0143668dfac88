package vmforward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/events"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/policy"
)

// Limits on what a guest can make the host do through publish-all: every
// listener it opens becomes a host socket, so both are bounded.
const (
	MaxAutoForwards = 64  // host listeners per VM from the guest's list
	MaxConnsPerPort = 128 // live connections per published port
	hostPortTries   = 20  // next ports tried after a taken one
)

// Guest is what publishing needs of a running VM's agent.
type Guest interface {
	WatchPorts(ctx context.Context, fn func([]agentproto.Port)) error
	Forward(ctx context.Context, addr string) (net.Conn, error)
}

// Resolve returns the VM's agent and policy; it may fail while the VM is
// still coming up, and is retried.
type Resolve func(ctx context.Context) (Guest, policy.VM, error)

// Publisher runs the host side of published ports: listeners on
// 127.0.0.1 whose connections go to the guest through its agent. The
// daemon starts a VM's set when it becomes ready and stops it when it
// stops; nothing here outlives the VM.
type Publisher struct {
	log      *slog.Logger
	events   *events.Bus
	life     context.Context
	loopback netip.Addr

	mu  sync.Mutex
	vms map[string]*vmPub // by VM id
}

// NewPublisher returns a publisher whose work ends with life; announcements
// go to bus (may be nil).
func NewPublisher(life context.Context, log *slog.Logger, bus *events.Bus) *Publisher {
	return &Publisher{log: log, events: bus, life: life, loopback: netip.AddrFrom4([4]byte{127, 0, 0, 1}), vms: map[string]*vmPub{}}
}

type vmPub struct {
	vm     model.VM
	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex
	fwd map[int]*hostFwd // by guest port
}

type hostFwd struct {
	ln        net.Listener
	guestPort int
	guestAddr string // where the agent dials in the guest
	note      string
	explicit  bool
	wg        sync.WaitGroup
}

// Start publishes vm's ports (replacing any set it had). A VM with
// nothing to publish is a no-op.
func (p *Publisher) Start(vm model.VM, resolve Resolve) {
	if !vm.Publish.All && len(vm.Publish.Ports) == 0 {
		return
	}
	p.Stop(vm.ID)
	ctx, cancel := context.WithCancel(p.life)
	v := &vmPub{vm: vm, cancel: cancel, done: make(chan struct{}), fwd: map[int]*hostFwd{}}
	p.mu.Lock()
	p.vms[vm.ID] = v
	p.mu.Unlock()
	go func() {
		defer close(v.done)
		p.run(ctx, v, resolve)
		v.closeAll(p, func(int, *hostFwd) bool { return true })
	}()
}

// Stop closes every listener of the VM and waits for its connections to
// end; idempotent.
func (p *Publisher) Stop(vmID string) {
	p.mu.Lock()
	v := p.vms[vmID]
	delete(p.vms, vmID)
	p.mu.Unlock()
	if v != nil {
		v.cancel()
		<-v.done
	}
}

// Close stops every VM's forwards.
func (p *Publisher) Close() {
	p.mu.Lock()
	ids := make([]string, 0, len(p.vms))
	for id := range p.vms {
		ids = append(ids, id)
	}
	p.mu.Unlock()
	for _, id := range ids {
		p.Stop(id)
	}
}

// Forwards lists the VM's live forwards, by guest port.
func (p *Publisher) Forwards(vmID string) []model.Forward {
	p.mu.Lock()
	v := p.vms[vmID]
	p.mu.Unlock()
	if v == nil {
		return nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]model.Forward, 0, len(v.fwd))
	for _, f := range v.fwd {
		out = append(out, model.Forward{Host: f.ln.Addr().String(), GuestPort: f.guestPort, Note: f.note})
	}
	slices.SortFunc(out, func(a, b model.Forward) int { return a.GuestPort - b.GuestPort })
	return out
}

// run binds the explicit ports, then (with All) follows the guest's
// listeners until ctx ends, re-resolving the agent when its stream fails.
func (p *Publisher) run(ctx context.Context, v *vmPub, resolve Resolve) {
	backoff := 200 * time.Millisecond
	explicitDone := false
	for ctx.Err() == nil {
		g, pol, err := resolve(ctx)
		if err == nil {
			if !explicitDone {
				for _, m := range v.vm.Publish.Ports {
					if err := pol.Forwardable(p.loopback, m.Guest); err != nil {
						p.log.Warn("publish refused by policy", "vm", v.vm.Name, "port", m.Guest, "err", err)
						continue
					}
					p.open(ctx, v, g, m.Guest, "127.0.0.1:"+strconv.Itoa(m.Guest), m.Host, true)
				}
				explicitDone = true
			}
			if !v.vm.Publish.All {
				<-ctx.Done()
				return
			}
			err = g.WatchPorts(ctx, func(ports []agentproto.Port) { p.sync(ctx, v, g, pol, ports) })
			backoff = 200 * time.Millisecond
		}
		if ctx.Err() != nil {
			return
		}
		p.log.Debug("publish: agent not reachable, retrying", "vm", v.vm.Name, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// sync makes the automatic forwards match the guest's (hostile) list: a
// TCP listener the policy reports and allows forwarding, on the guest's
// loopback, any address or its own address, gets one; the rest lose theirs.
func (p *Publisher) sync(ctx context.Context, v *vmPub, g Guest, pol policy.VM, ports []agentproto.Port) {
	want := map[int]string{}
	for _, pt := range ports {
		if pt.Proto != "tcp" && pt.Proto != "tcp6" || pt.Port < 1 || pt.Port > 65535 {
			continue
		}
		l := policy.Listener{Proto: pt.Proto, Address: pt.Address, Port: pt.Port, PID: pt.PID, Command: pt.Command}
		if len(pt.Cmdline) > 0 {
			l.Argv0 = pt.Cmdline[0]
		}
		if !pol.Report(l).Visible {
			continue
		}
		addr, err := netip.ParseAddr(pt.Address)
		if err != nil {
			continue
		}
		addr = addr.Unmap()
		var dial netip.Addr
		switch {
		case addr.IsUnspecified() || addr.Is4() && addr.IsLoopback():
			dial = p.loopback
		case addr.IsLoopback():
			dial = netip.IPv6Loopback()
		case pol.Addr.IsValid() && addr == pol.Addr:
			dial = addr
		default:
			continue // bound to some other address: not the guest's own
		}
		if pol.Forwardable(dial, pt.Port) != nil {
			continue
		}
		if _, ok := want[pt.Port]; ok && dial != p.loopback {
			continue // keep the IPv4 loopback when a port has several
		}
		want[pt.Port] = net.JoinHostPort(dial.String(), strconv.Itoa(pt.Port))
	}
	v.closeAll(p, func(port int, f *hostFwd) bool {
		_, keep := want[port]
		return !f.explicit && !keep
	})
	n := v.autoCount()
	for port, addr := range want {
		if v.get(port) != nil {
			continue
		}
		if n >= MaxAutoForwards {
			p.log.Warn("publish: too many guest listeners, not forwarding more", "vm", v.vm.Name, "max", MaxAutoForwards)
			break
		}
		host := port
		if port < 1024 {
			host = 0 // a guest never gets a privileged host port
		}
		if p.open(ctx, v, g, port, addr, host, false) {
			n++
		}
	}
}

// open listens on 127.0.0.1:host (the next free port when it is taken, a
// kernel-chosen one when host is 0 or all tries fail) and serves it.
func (p *Publisher) open(ctx context.Context, v *vmPub, g Guest, guestPort int, guestAddr string, host int, explicit bool) bool {
	ln, note, err := listenLoopback(host)
	if err != nil {
		p.log.Warn("publish: cannot listen", "vm", v.vm.Name, "guest_port", guestPort, "err", err)
		p.events.Publish(ctx, events.Event{Kind: events.KindPortError, VM: v.vm.Name, VMID: v.vm.ID,
			Reason: fmt.Sprintf("guest port %d: %v", guestPort, err)})
		return false
	}
	f := &hostFwd{ln: ln, guestPort: guestPort, guestAddr: guestAddr, note: note, explicit: explicit}
	v.mu.Lock()
	v.fwd[guestPort] = f
	v.mu.Unlock()
	reason := fmt.Sprintf("%s → guest port %d", ln.Addr(), guestPort)
	if note != "" {
		reason += " (" + note + ")"
	}
	p.log.Info("published port", "vm", v.vm.Name, "host", ln.Addr().String(), "guest_port", guestPort, "note", note)
	p.events.Publish(ctx, events.Event{Kind: events.KindPortPublished, VM: v.vm.Name, VMID: v.vm.ID, Reason: reason})
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.serve(ctx, g)
	}()
	return true
}

func listenLoopback(port int) (net.Listener, string, error) {
	if port == 0 {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		return ln, "", err
	}
	var firstErr error
	for i := 0; i <= hostPortTries && port+i <= 65535; i++ {
		ln, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+i)))
		if err == nil {
			note := ""
			if i > 0 {
				note = fmt.Sprintf("host port %d was taken", port)
			}
			return ln, note, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if !errors.Is(err, syscall.EADDRINUSE) && !errors.Is(err, syscall.EACCES) {
			return nil, "", err
		}
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	return ln, fmt.Sprintf("host ports %d..%d were taken", port, min(port+hostPortTries, 65535)), nil
}

// serve accepts until the listener closes, each connection carried to the
// guest through the agent; at most MaxConnsPerPort at a time.
func (f *hostFwd) serve(ctx context.Context, g Guest) {
	sem := make(chan struct{}, MaxConnsPerPort)
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		select {
		case sem <- struct{}{}:
		default:
			c.Close()
			continue
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer func() { <-sem }()
			pipe(ctx, c, g, f.guestAddr)
		}()
	}
}

func pipe(ctx context.Context, c net.Conn, g Guest, addr string) {
	defer c.Close()
	gc, err := g.Forward(ctx, addr)
	if err != nil {
		return
	}
	defer gc.Close()
	stop := context.AfterFunc(ctx, func() { c.Close(); gc.Close() })
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(gc, c)
		if cw, ok := gc.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}()
	_, _ = io.Copy(c, gc)
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	<-done
}

func (v *vmPub) get(port int) *hostFwd {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.fwd[port]
}

func (v *vmPub) autoCount() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for _, f := range v.fwd {
		if !f.explicit {
			n++
		}
	}
	return n
}

// closeAll closes the forwards drop selects and waits for their
// connections.
func (v *vmPub) closeAll(p *Publisher, drop func(port int, f *hostFwd) bool) {
	var gone []*hostFwd
	v.mu.Lock()
	for port, f := range v.fwd {
		if drop(port, f) {
			delete(v.fwd, port)
			gone = append(gone, f)
		}
	}
	v.mu.Unlock()
	for _, f := range gone {
		addr := f.ln.Addr().String()
		f.ln.Close()
		f.wg.Wait()
		p.events.Publish(context.Background(), events.Event{Kind: events.KindPortUnpublished, VM: v.vm.Name, VMID: v.vm.ID,
			Reason: fmt.Sprintf("%s → guest port %d", addr, f.guestPort)})
	}
}
