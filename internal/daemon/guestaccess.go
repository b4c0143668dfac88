package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"encoding/json"

	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/policy"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/sshkeys"
	"github.com/bangerdev/banger/internal/store"
)

// sshProbeTimeout bounds the trust-on-first-use handshake, sshd start-up
// included (TCG guests are slow).
const sshProbeTimeout = 45 * time.Second

func (d *Daemon) guestAccessMethods(m *rpc.Methods) {
	rpc.Register(m, api.MethodVMSSHInfo, d.vmSSHInfo)
	rpc.Register(m, api.MethodVMForgetHostKey, d.vmForgetHostKey)
	rpc.Register(m, api.MethodVMPorts, d.vmPorts)
	rpc.Register(m, api.MethodVMForward, d.vmForward)
	rpc.Register(m, api.MethodVMCopy, d.vmCopy)
	rpc.Register(m, api.MethodVMSessions, d.vmSessions)
}

func (d *Daemon) sshFiles() sshkeys.Files { return sshkeys.FilesFor(d.paths) }

// guestAuthorizedKeys is vmlife's AuthorizedKeys: banger's key, made on the
// first boot. Every boot is also when a VM's address becomes live, so the
// ssh_config include is refreshed here too (best effort: a failure only
// costs `ssh NAME.banger` a stale entry until the next vm ssh).
func (d *Daemon) guestAuthorizedKeys(ctx context.Context) []string {
	line, err := sshkeys.EnsureKey(d.sshFiles())
	if err != nil {
		d.log.ErrorContext(ctx, "banger ssh key unavailable: guests get no authorized key", "err", err)
		return nil
	}
	if err := d.refreshSSHFiles(context.WithoutCancel(ctx)); err != nil {
		d.log.WarnContext(ctx, "refresh ssh_config include", "err", err)
	}
	return []string{line}
}

// refreshSSHFiles rewrites known_hosts and the ssh_config include from the
// store, the single source of truth for pinned keys and addresses.
func (d *Daemon) refreshSSHFiles(ctx context.Context) error {
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		return fmt.Errorf("list vms for ssh files: %w", err)
	}
	hosts := make([]sshkeys.Host, 0, len(vms))
	for _, vm := range vms {
		keys, err := d.store.GetHostKeys(ctx, vm.ID)
		if err != nil {
			return err
		}
		h := sshkeys.Host{Name: vm.Name, IP: vm.IP}
		for _, k := range keys {
			h.HostKeys = append(h.HostKeys, k.Key)
		}
		hosts = append(hosts, h)
	}
	f := d.sshFiles()
	return errors.Join(sshkeys.WriteKnownHosts(f, hosts), sshkeys.WriteConfig(f, hosts))
}

// vmSSHInfo checks the guest's host key against the pinned one (pinning it
// on first use) and returns what the CLI needs to run the system ssh with
// strict checking against banger's known_hosts.
func (d *Daemon) vmSSHInfo(ctx context.Context, c *rpc.Call, p api.VMRef) (api.SSHInfo, error) {
	c.SetTarget(p.Name)
	vm, _, err := d.vms.AgentFor(ctx, p.Name)
	if err != nil {
		return api.SSHInfo{}, err
	}
	if vm.IP == "" {
		return api.SSHInfo{}, api.Errorf(api.CodeFailedPrecondition, "vm %q has no network address (is banger's network up? see banger doctor); use banger vm exec instead", vm.Name)
	}
	f := d.sshFiles()
	if _, err := sshkeys.EnsureKey(f); err != nil {
		return api.SSHInfo{}, err
	}
	before, err := d.store.GetHostKeys(ctx, vm.ID)
	if err != nil {
		return api.SSHInfo{}, err
	}
	var pinned model.HostKey
	pin := func(key ssh.PublicKey) error {
		k, err := d.store.PinHostKey(ctx, model.HostKey{VMID: vm.ID, Algorithm: key.Type(), Key: sshkeys.AuthorizedForm(key)})
		if errors.Is(err, store.ErrHostKeyMismatch) {
			changed := &sshkeys.HostKeyChangedError{VM: vm.Name, Algorithm: key.Type(), Presented: ssh.FingerprintSHA256(key)}
			for _, old := range before {
				if old.Algorithm == key.Type() {
					changed.PinnedSince = old.PinnedAt
					if pk, _, _, _, perr := ssh.ParseAuthorizedKey([]byte(old.Key)); perr == nil {
						changed.Pinned = ssh.FingerprintSHA256(pk)
					}
				}
			}
			c.Log.WarnContext(ctx, "guest host key changed: refusing", "vm", vm.Name, "pinned", changed.Pinned, "presented", changed.Presented)
			return api.Errorf(api.CodeFailedPrecondition, "%s", changed.Error())
		}
		if err != nil {
			return err
		}
		pinned = k
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, sshProbeTimeout)
	defer cancel()
	if err := sshkeys.Probe(pctx, net.JoinHostPort(vm.IP, "22"), pin); err != nil {
		var ae *api.Error
		if errors.As(err, &ae) {
			return api.SSHInfo{}, err
		}
		return api.SSHInfo{}, api.Errorf(api.CodeUnavailable, "check ssh host key of vm %q: %v (does the image run sshd? banger vm exec works without it)", vm.Name, err)
	}
	first := true
	for _, old := range before {
		if old.Algorithm == pinned.Algorithm {
			first = false
		}
	}
	if first {
		c.Log.InfoContext(ctx, "pinned guest host key on first use", "vm", vm.Name, "algorithm", pinned.Algorithm)
	}
	if err := d.refreshSSHFiles(ctx); err != nil {
		return api.SSHInfo{}, err
	}
	return api.SSHInfo{
		Name: vm.Name, IP: vm.IP, User: "root", HostAlias: sshkeys.Alias(vm.Name),
		KeyPath: f.Key, KnownHosts: f.KnownHosts, Config: f.Config,
		HostKey: pinned.Key, Pinned: first,
	}, nil
}

func (d *Daemon) vmForgetHostKey(ctx context.Context, c *rpc.Call, p api.VMRef) (api.Empty, error) {
	c.SetTarget(p.Name)
	vm, err := d.vms.Get(ctx, p.Name)
	if err != nil {
		return api.Empty{}, err
	}
	if err := d.store.ForgetHostKeys(ctx, vm.ID); err != nil {
		return api.Empty{}, err
	}
	c.Log.WarnContext(ctx, "forgot pinned host keys at the user's request", "vm", vm.Name)
	return api.Empty{}, d.refreshSSHFiles(ctx)
}

// agentOf returns a running VM and its agent client.
func (d *Daemon) agentOf(ctx context.Context, name, what string) (model.VM, *guestAgent, error) {
	vm, agent, err := d.vms.AgentFor(ctx, name)
	if err != nil {
		return vm, nil, err
	}
	ga, ok := agent.(*guestAgent)
	if !ok {
		return vm, nil, api.Errorf(api.CodeUnimplemented, "vm %q: agent does not support %s", vm.Name, what)
	}
	return vm, ga, nil
}

// portsFrom turns the agent's (hostile) listener list into what vm ports
// shows: the VM's policy decides what is hidden (kept with its reason when
// all) and labels the rest.
func portsFrom(in []agentproto.Port, pol policy.VM, all bool) []api.Port {
	out := make([]api.Port, 0, len(in))
	for _, p := range in {
		l := policy.Listener{Proto: p.Proto, Address: p.Address, Port: p.Port, PID: p.PID, Command: p.Command}
		if len(p.Cmdline) > 0 {
			l.Argv0 = p.Cmdline[0]
		}
		r := pol.Report(l)
		if !r.Visible && !all {
			continue
		}
		ap := api.Port{Proto: p.Proto, Address: p.Address, Port: p.Port, PID: p.PID, Command: p.Command, Cmdline: p.Cmdline, Labels: r.Labels}
		if !r.Visible {
			ap.Hidden = r.Reason
		}
		out = append(out, ap)
	}
	return out
}

// forwardTarget checks a vm.forward request against the VM's policy and
// returns the address the agent dials in the guest.
func forwardTarget(vm model.VM, p api.VMForward) (string, error) {
	host := p.Host
	if host == "" {
		host = "127.0.0.1"
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return "", api.Errorf(api.CodeInvalidArgument, "vm forward: guest host %q is not an IP address", host)
	}
	pol, err := policy.FromModel(vm)
	if err != nil {
		return "", err
	}
	if err := pol.Forwardable(addr, p.Port); err != nil {
		if errors.Is(err, policy.ErrDenied) {
			return "", api.Errorf(api.CodePermissionDenied, "vm forward: %v", err)
		}
		return "", api.Errorf(api.CodeInvalidArgument, "vm forward: %v", err)
	}
	return net.JoinHostPort(addr.Unmap().String(), strconv.Itoa(p.Port)), nil
}

// vmPorts lists the guest's listening sockets; with Watch it streams the
// full list after every change until the client goes away.
func (d *Daemon) vmPorts(ctx context.Context, c *rpc.Call, p api.VMPorts) (api.PortList, error) {
	c.SetTarget(p.Name)
	vm, ga, err := d.agentOf(ctx, p.Name, "ports")
	if err != nil {
		return api.PortList{}, err
	}
	pol, err := policy.FromModel(vm)
	if err != nil {
		return api.PortList{}, err
	}
	if !p.Watch {
		ports, err := ga.Ports(ctx)
		if err != nil {
			return api.PortList{}, agentError(fmt.Errorf("list ports of vm %q: %w", vm.Name, err))
		}
		return api.PortList{Ports: portsFrom(ports, pol, p.All)}, nil
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var sendErr error
	err = ga.WatchPorts(wctx, func(ports []agentproto.Port) {
		if err := c.Send(api.KindPorts, portsFrom(ports, pol, p.All)); err != nil {
			sendErr = err
			cancel()
		}
	})
	if err != nil {
		return api.PortList{}, agentError(fmt.Errorf("watch ports of vm %q: %w", vm.Name, err))
	}
	if sendErr != nil && ctx.Err() == nil {
		return api.PortList{}, sendErr
	}
	return api.PortList{}, nil // the list went out as frames
}

// vmForward carries one TCP connection to a guest port over the agent
// channel, as KindBytes frames each way.
func (d *Daemon) vmForward(ctx context.Context, c *rpc.Call, p api.VMForward) (api.Empty, error) {
	if err := checkOrigin(p.Origin); err != nil {
		return api.Empty{}, err
	}
	if err := mcpCheckForward(d.cfg.MCP, p.Origin); err != nil {
		return api.Empty{}, err
	}
	c.SetTarget(p.Name)
	vm, ga, err := d.agentOf(ctx, p.Name, "forwarding")
	if err != nil {
		return api.Empty{}, err
	}
	addr, err := forwardTarget(vm, p)
	if err != nil {
		c.Log.WarnContext(ctx, "forward refused", "vm", vm.Name, "port", p.Port, "err", err)
		return api.Empty{}, err
	}
	conn, err := ga.Forward(ctx, addr)
	if err != nil {
		return api.Empty{}, agentError(fmt.Errorf("forward to %s in vm %q: %w", addr, vm.Name, err))
	}
	defer conn.Close()
	// A client that goes away cancels ctx; the guest side may never close
	// (a service waiting for a request), so close it here, or the read
	// below holds this goroutine and its stream until the guest does.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c.Log.DebugContext(ctx, "forwarding", "vm", vm.Name, "addr", addr)
	// Client → guest until the client's eof, which half-closes the guest side.
	go func() {
		for {
			f, err := c.Recv(ctx)
			if err != nil {
				if errors.Is(err, io.EOF) {
					if cw, ok := conn.(interface{ CloseWrite() error }); ok {
						_ = cw.CloseWrite()
					}
				}
				return
			}
			if f.Kind != api.KindBytes {
				continue
			}
			var b []byte
			if json.Unmarshal(f.Payload, &b) != nil {
				continue
			}
			if _, err := conn.Write(b); err != nil {
				return
			}
		}
	}()
	// Guest → client until the guest side closes; that ends the call.
	buf := make([]byte, 64<<10)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			if serr := c.Send(api.KindBytes, buf[:n]); serr != nil {
				return api.Empty{}, serr
			}
		}
		if errors.Is(err, io.EOF) {
			return api.Empty{}, nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return api.Empty{}, ctx.Err()
			}
			return api.Empty{}, fmt.Errorf("forward from %s in vm %q: %w", addr, vm.Name, err)
		}
	}
}

// vmCopy copies between a local path and the guest through the agent. The
// daemon and the CLI are the same user on the same machine, so the daemon
// reads and writes the local side itself: no archive crosses the socket.
func (d *Daemon) vmCopy(ctx context.Context, c *rpc.Call, p api.VMCopy) (api.Empty, error) {
	if !filepath.IsAbs(p.Local) {
		return api.Empty{}, api.Errorf(api.CodeInvalidArgument, "vm cp: local path %q must be absolute", p.Local)
	}
	if !filepath.IsAbs(p.Guest) {
		return api.Empty{}, api.Errorf(api.CodeInvalidArgument, "vm cp: guest path %q must be absolute", p.Guest)
	}
	local := filepath.Clean(p.Local)
	c.SetTarget(p.Name)
	vm, ga, err := d.agentOf(ctx, p.Name, "copy")
	if err != nil {
		return api.Empty{}, err
	}
	switch p.Direction {
	case api.CopyIn:
		if _, err := os.Lstat(local); err != nil {
			return api.Empty{}, api.Errorf(api.CodeNotFound, "vm cp: %v", err)
		}
		c.Log.InfoContext(ctx, "copy into guest", "vm", vm.Name, "local", local, "guest_dir", p.Guest)
	case api.CopyOut:
		c.Log.InfoContext(ctx, "copy out of guest", "vm", vm.Name, "guest", p.Guest, "local_dir", local)
	default:
		return api.Empty{}, api.Errorf(api.CodeInvalidArgument, "vm cp: direction %q is neither %q nor %q", p.Direction, api.CopyIn, api.CopyOut)
	}
	p.Local = local
	limits := agentproto.CopyLimits{MaxBytes: d.cfg.Copy.MaxBytes, MaxEntries: d.cfg.Copy.MaxEntries}
	return api.Empty{}, guestCopy(ctx, ga, vm.Name, p, limits)
}

// guestCopy runs a checked vm.cp through the VM's agent; agent errors get
// their wire codes.
func guestCopy(ctx context.Context, ga *guestAgent, vmName string, p api.VMCopy, limits agentproto.CopyLimits) error {
	switch p.Direction {
	case api.CopyIn:
		if err := ga.CopyPathIn(ctx, p.Local, p.Guest); err != nil {
			return agentError(fmt.Errorf("copy %s into %s in vm %q: %w", p.Local, p.Guest, vmName, err))
		}
	case api.CopyOut:
		_, lerr := os.Lstat(p.Local)
		if err := ga.CopyPathOut(ctx, p.Guest, p.Local, limits); err != nil {
			if errors.Is(lerr, os.ErrNotExist) {
				// The extraction made the destination before the guest
				// answered: a failed copy leaves no empty directory behind.
				_ = os.Remove(p.Local)
			}
			hint := ""
			if errors.Is(err, agentproto.ErrArchiveLimit) {
				hint = " (if a copy this big is expected, raise copy.max_bytes or copy.max_entries in config.toml and restart the daemon)"
			}
			return agentError(fmt.Errorf("copy %s from vm %q into %s: %w%s", p.Guest, vmName, p.Local, err, hint))
		}
	default:
		return api.Errorf(api.CodeInvalidArgument, "vm cp: direction %q is neither %q nor %q", p.Direction, api.CopyIn, api.CopyOut)
	}
	return nil
}

func (d *Daemon) vmSessions(ctx context.Context, c *rpc.Call, p api.VMRef) (api.SessionList, error) {
	vm, err := d.vms.Get(ctx, p.Name)
	if err != nil {
		return api.SessionList{}, err
	}
	s, err := d.store.ListGuestSessions(ctx, vm.ID)
	if err != nil {
		return api.SessionList{}, err
	}
	if s == nil {
		s = []model.GuestSession{}
	}
	detached, why := d.detachedSessions(ctx, vm.Name)
	return api.SessionList{Sessions: s, Detached: detached, DetachedError: why}, nil
}

// sessionLost is the exit code recorded when a command's fate is unknown
// (the agent channel broke before it reported an exit).
const sessionLost = -1

// startSession records a guest command; the returned func records its end.
// Recording failures are logged, never fatal: the command matters more.
func (d *Daemon) startSession(ctx context.Context, c *rpc.Call, vm model.VM, argv []string) func(code int, err error) {
	gs, err := d.store.StartGuestSession(ctx, model.GuestSession{VMID: vm.ID, OpID: c.OpID, Command: argv})
	if err != nil {
		c.Log.WarnContext(ctx, "record guest session", "vm", vm.Name, "err", err)
		return func(int, error) {}
	}
	return func(code int, err error) {
		if err != nil {
			code = sessionLost
		}
		if _, err := d.store.EndGuestSession(context.WithoutCancel(ctx), gs.ID, code); err != nil {
			c.Log.WarnContext(ctx, "record guest session end", "vm", vm.Name, "session", gs.ID, "err", err)
		}
	}
}
