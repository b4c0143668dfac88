package agentclient

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentserver"
)

func testLogger() *slog.Logger {
	if os.Getenv("VSOCKAGENT_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newTestServer(opts agentserver.ServerOptions) *agentserver.Server {
	opts.Logger = testLogger()
	if opts.BootID == "" {
		opts.BootID = "boot-test"
	}
	if opts.Version == "" {
		opts.Version = "v-test"
	}
	if opts.PortsInterval == 0 {
		opts.PortsInterval = 100 * time.Millisecond
	}
	return agentserver.NewServer(opts)
}

// runInBackground runs fn until the test ends, then cancels it and waits.
func runInBackground(t testing.TB, fn func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("server did not stop within 10s")
		}
	})
}

type transport struct {
	name  string
	start func(t testing.TB, srv *agentserver.Server) *Client
}

var transports = []transport{
	{"unix", startUnix},
	{"yamux", startYamux},
}

// startUnix serves one request per unix connection, as over vsock.
func startUnix(t testing.TB, srv *agentserver.Server) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, func(ctx context.Context) error { return srv.Serve(ctx, ln) })
	return NewClient(unixDialer(sock), testLogger())
}

// unixDialer dials the agent socket at sock.
func unixDialer(sock string) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}
}

// scriptedAgent is a compromised guest: it speaks the real protocol (the
// same stream, line and frame code) on a unix socket and answers every
// Request with serve (after reading it).
func scriptedAgent(t *testing.T, serve func(st *agentproto.Stream, method string)) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, func(ctx context.Context) error {
		go func() { <-ctx.Done(); _ = ln.Close() }()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return nil
			}
			go func() {
				defer conn.Close()
				st := agentproto.NewStream(conn)
				var req agentproto.Request
				if st.ReadLine(&req) != nil {
					return
				}
				serve(st, req.Method)
			}()
		}
	})
	return NewClient(unixDialer(sock), testLogger())
}

// hostileMethod is a compromised guest that accepts method (and nothing
// else), then writes whatever serve writes.
func hostileMethod(t *testing.T, method string, serve func(st *agentproto.Stream)) *Client {
	t.Helper()
	return scriptedAgent(t, func(st *agentproto.Stream, m string) {
		if m != method || agentserver.Respond(st, struct{}{}) != nil {
			return
		}
		serve(st)
	})
}

// startYamux serves over a fake virtio-serial port behind a unix socket
// chardev, the way QEMU wires it, with a host-side YamuxDialer.
func startYamux(t testing.TB, srv *agentserver.Server) *Client {
	t.Helper()
	ch := newFakeChardev(t, true)
	runInBackground(t, func(ctx context.Context) error { return srv.ServePort(ctx, ch.open) })
	d := NewYamuxDialer(ch.sock, testLogger())
	t.Cleanup(func() { _ = d.Close() })
	return NewClient(d.Dial, testLogger())
}

// fakeChardev mimics QEMU's `-chardev socket,server=on` wired to a
// virtio-serial port: one host client at a time on a unix socket; the
// guest's port is a byte stream that, with eofOnHangup, reads EOF while no
// host is connected (as virtio_console does), or else just waits.
type fakeChardev struct {
	sock        string
	ln          net.Listener
	eofOnHangup bool
	free        chan struct{} // a token while no host is connected
	opens       atomic.Int64

	mu  sync.Mutex
	cur net.Conn
}

func newFakeChardev(t testing.TB, eofOnHangup bool) *fakeChardev {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "chardev.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ch := &fakeChardev{sock: sock, ln: ln, eofOnHangup: eofOnHangup, free: make(chan struct{}, 1)}
	ch.free <- struct{}{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range ch.free {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ch.mu.Lock()
			ch.cur = c
			ch.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		ch.dropHost()
		<-done
	})
	return ch
}

func (ch *fakeChardev) current() net.Conn {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.cur
}

// dropHost disconnects the current host client, as when it hangs up.
func (ch *fakeChardev) dropHost() { ch.drop(ch.current()) }

func (ch *fakeChardev) drop(c net.Conn) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if c == nil || ch.cur != c {
		return
	}
	_ = c.Close()
	ch.cur = nil
	select {
	case ch.free <- struct{}{}:
	default:
	}
}

func (ch *fakeChardev) open() (io.ReadWriteCloser, error) {
	ch.opens.Add(1)
	return &fakePort{ch: ch}, nil
}

type fakePort struct {
	ch     *fakeChardev
	closed atomic.Bool
}

func (p *fakePort) Read(b []byte) (int, error) {
	for {
		if p.closed.Load() {
			return 0, os.ErrClosed
		}
		c := p.ch.current()
		if c == nil {
			if p.ch.eofOnHangup {
				return 0, io.EOF
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		// Clear before checking closed: a Close racing with us sets its
		// deadline after this, so the Read below still wakes.
		_ = c.SetReadDeadline(time.Time{})
		if p.closed.Load() {
			return 0, os.ErrClosed
		}
		n, err := c.Read(b)
		if err == nil {
			return n, nil
		}
		if p.closed.Load() {
			return n, os.ErrClosed
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue // a poke meant for an earlier port handle
		}
		p.ch.drop(c)
		if n > 0 {
			return n, nil
		}
		if p.ch.eofOnHangup {
			return 0, io.EOF
		}
	}
}

func (p *fakePort) Write(b []byte) (int, error) {
	if p.closed.Load() {
		return 0, os.ErrClosed
	}
	c := p.ch.current()
	if c == nil {
		if p.ch.eofOnHangup {
			return 0, errors.New("port: host not connected")
		}
		return len(b), nil // dropped, like QEMU with no client
	}
	return c.Write(b)
}

func (p *fakePort) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	if c := p.ch.current(); c != nil {
		_ = c.SetReadDeadline(time.Now()) // wake this handle's pending Read
	}
	return nil
}

// syncBuffer is a bytes.Buffer safe for a writer and a polling reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls cond every 20ms for at most d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func lines(s string) []string { return strings.Split(strings.TrimSpace(s), "\n") }
