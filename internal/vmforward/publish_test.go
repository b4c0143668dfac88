package vmforward

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/events"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/policy"
)

// fakeGuest reports a fixed (hostile) listener list, then a second one,
// and records where it was asked to dial; each dial reaches a local server
// that answers with the address asked for.
type fakeGuest struct {
	lists chan []agentproto.Port
	mu    sync.Mutex
	dials []string
}

func (g *fakeGuest) WatchPorts(ctx context.Context, fn func([]agentproto.Port)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case l := <-g.lists:
			fn(l)
		}
	}
}

func (g *fakeGuest) Forward(ctx context.Context, addr string) (net.Conn, error) {
	g.mu.Lock()
	g.dials = append(g.dials, addr)
	g.mu.Unlock()
	a, b := net.Pipe()
	go func() { io.WriteString(b, "guest:"+addr+"\n"); b.Close() }()
	return a, nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %s within 5s", what)
}

func TestPublishAllFollowsHostileList(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bus := events.New(nil, 64)
	sub := bus.Subscribe()
	defer sub.Cancel()
	p := NewPublisher(ctx, slog.New(slog.DiscardHandler), bus)
	g := &fakeGuest{lists: make(chan []agentproto.Port, 4)}
	guestIP := netip.MustParseAddr("10.213.77.5")
	pol := policy.VM{Name: "h", Addr: guestIP, ForwardDeny: []int{25001}}
	vm := model.VM{ID: "id1", Name: "h", Publish: model.VMPublish{All: true}}

	// The host already has 127.0.0.1:P: the guest's P goes to a later port.
	taken, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	tp := taken.Addr().(*net.TCPAddr).Port
	free := freePort(t)

	g.lists <- []agentproto.Port{
		{Proto: "tcp", Address: "0.0.0.0", Port: free},                                // forwarded to the guest's loopback
		{Proto: "tcp", Address: "10.213.77.5", Port: tp},                              // its own address: dialled there
		{Proto: "tcp", Address: "192.168.1.9", Port: 25002},                           // another address: never
		{Proto: "udp", Address: "0.0.0.0", Port: 25003},                               // UDP: never
		{Proto: "tcp", Address: "0.0.0.0", Port: 25001},                               // forward-denied
		{Proto: "tcp", Address: "0.0.0.0", Port: 0},                                   // nonsense
		{Proto: "tcp", Address: "0.0.0.0", Port: 70000},                               // nonsense
		{Proto: "tcp", Address: "not-an-ip", Port: 25004},                             // nonsense
		{Proto: "tcp", Address: "0.0.0.0", Port: 25005, Command: policy.AgentCommand}, // the agent itself
	}
	p.Start(vm, func(context.Context) (Guest, policy.VM, error) { return g, pol, nil })
	waitFor(t, "two forwards", func() bool { return len(p.Forwards("id1")) == 2 })
	fs := p.Forwards("id1")
	byGuest := map[int]model.Forward{}
	for _, f := range fs {
		byGuest[f.GuestPort] = f
	}
	if f := byGuest[free]; f.Host != "127.0.0.1:"+strconv.Itoa(free) || f.Note != "" {
		t.Fatalf("guest %d: %+v", free, f)
	}
	f := byGuest[tp]
	if f.Host == "127.0.0.1:"+strconv.Itoa(tp) || !strings.Contains(f.Note, "was taken") {
		t.Fatalf("guest %d (host port taken): %+v", tp, f)
	}
	for _, fw := range fs {
		c, err := net.Dial("tcp", fw.Host)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		want := "guest:127.0.0.1:" + strconv.Itoa(fw.GuestPort) + "\n"
		if fw.GuestPort == tp {
			want = "guest:10.213.77.5:" + strconv.Itoa(tp) + "\n"
		}
		if string(b) != want {
			t.Fatalf("through %s: %q, want %q", fw.Host, b, want)
		}
	}

	// The listener on free goes away in the guest: so does its forward.
	g.lists <- []agentproto.Port{{Proto: "tcp", Address: "10.213.77.5", Port: tp}}
	waitFor(t, "one forward", func() bool { return len(p.Forwards("id1")) == 1 })
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(free), time.Second); err == nil {
		c.Close()
		t.Fatal("forward of a closed guest listener still accepts")
	}
	host := p.Forwards("id1")[0].Host
	p.Stop("id1")
	if c, err := net.DialTimeout("tcp", host, time.Second); err == nil {
		c.Close()
		t.Fatal("a forward still accepts after Stop")
	}
	if p.Forwards("id1") != nil {
		t.Fatal("forwards listed after Stop")
	}
	var kinds []string
	for len(kinds) < 4 {
		select {
		case ev := <-sub.C():
			kinds = append(kinds, ev.Kind)
		case <-time.After(5 * time.Second):
			t.Fatalf("events so far: %v", kinds)
		}
	}
	if strings.Join(kinds, ",") != "port.published,port.published,port.unpublished,port.unpublished" {
		t.Fatalf("events %v", kinds)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, d := range g.dials {
		if !strings.HasPrefix(d, "127.0.0.1:") && !strings.HasPrefix(d, "10.213.77.5:") {
			t.Fatalf("dialled %s in the guest", d)
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		// The next hostPortTries ports must not matter here: only p.
		if p >= 1024 {
			return p
		}
	}
	t.Fatal("no free port")
	return 0
}
