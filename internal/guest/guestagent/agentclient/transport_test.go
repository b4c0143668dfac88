package agentclient

import (
	"github.com/bangerdev/banger/internal/guest/guestagent/agenttest"

	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentserver"
	"github.com/bangerdev/banger/internal/testutil"
	"golang.org/x/sys/unix"
)

func healthy(t *testing.T, c *Client, what string) {
	t.Helper()
	if _, err := c.Health(testCtx(t, 20*time.Second)); err != nil {
		t.Fatalf("%s: health: %v", what, err)
	}
}

// The host drops the channel in the middle of an exec: the exec fails, its
// process is killed, and the same dialer reconnects for the next request.
// A new dialer (a restarted daemon) then takes over the channel.
func TestYamuxHostReconnect(t *testing.T) {
	for _, eof := range []bool{true, false} {
		t.Run(fmt.Sprintf("eofOnHangup=%v", eof), func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(agentserver.ServerOptions{KillGrace: 500 * time.Millisecond})
			ch := newFakeChardev(t, eof)
			runInBackground(t, func(ctx context.Context) error { return srv.ServePort(ctx, ch.open) })
			d := NewYamuxDialer(ch.sock, testLogger())
			t.Cleanup(func() { _ = d.Close() })
			c := NewClient(d.Dial, testLogger())
			healthy(t, c, "first session")

			var out syncBuffer
			res := make(chan error, 1)
			go func() {
				_, err := c.Exec(context.Background(), agentproto.ExecRequest{Argv: []string{"sh", "-c", "echo $$; exec sleep 30"}}, nil, &out, nil, nil, nil)
				res <- err
			}()
			waitFor(t, 20*time.Second, "pid line", func() bool { return strings.Contains(out.String(), "\n") })
			pid, err := strconv.Atoi(strings.TrimSpace(out.String()))
			agenttest.Must(t, err)

			// Close the host's end of the socket mid-session.
			d.mu.Lock()
			_ = d.sess.Close()
			d.mu.Unlock()
			select {
			case err := <-res:
				if !errors.Is(err, agentproto.ErrConnectionLost) {
					t.Fatalf("exec on a dropped session: err = %v, want ErrConnectionLost", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("exec did not fail when the session dropped")
			}
			healthy(t, c, "after reconnect")
			// The guest saw the hangup (or, without EOF, the new HELLO ended
			// its stale session) and stopped the process.
			waitFor(t, 15*time.Second, "process of the dropped session to die", func() bool {
				return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
			})
			code, got, _ := runExec(t, c, agentproto.ExecRequest{Argv: []string{"echo", "again"}}, nil)
			if code != 0 || got != "again\n" {
				t.Fatalf("exec after reconnect: %d %q", code, got)
			}

			// The daemon restarts: the old session vanishes without a word
			// (in eof=false mode the guest is left with a stale session),
			// and a new dialer must get through.
			_ = d.Close()
			d2 := NewYamuxDialer(ch.sock, testLogger())
			t.Cleanup(func() { _ = d2.Close() })
			c2 := NewClient(d2.Dial, testLogger())
			healthy(t, c2, "new dialer")
			if _, err := c.Health(testCtx(t, 5*time.Second)); !errors.Is(err, agentproto.ErrDialerClosed) {
				t.Fatalf("closed dialer: err = %v, want ErrDialerClosed", err)
			}
		})
	}
}

// Bytes left over from a dead session sit in the channel before the new
// HELLO; the handshake skips them.
func TestYamuxHandshakeSkipsStaleBytes(t *testing.T) {
	srv := newTestServer(agentserver.ServerOptions{})
	ch := newFakeChardev(t, true)
	runInBackground(t, func(ctx context.Context) error { return srv.ServePort(ctx, ch.open) })
	d := newYamuxDialer(func(ctx context.Context) (net.Conn, error) {
		var nd net.Dialer
		c, err := nd.DialContext(ctx, "unix", ch.sock)
		if err != nil {
			return nil, err
		}
		// Stale half-frames and a HELLO with a nonce nobody waits for.
		_, err = c.Write([]byte("\x00\x01\x00\x00garbage" + agentproto.HelloPrefix + "stale\n\x00\x00"))
		return c, err
	}, testLogger())
	t.Cleanup(func() { _ = d.Close() })
	healthy(t, NewClient(d.Dial, testLogger()), "after stale bytes")
}

// While no host is connected, virtio-serial reads return EOF at once: the
// guest must poll with backoff, not spin.
func TestServePortBacksOffWithoutHost(t *testing.T) {
	srv := newTestServer(agentserver.ServerOptions{})
	ch := newFakeChardev(t, true)
	runInBackground(t, func(ctx context.Context) error { return srv.ServePort(ctx, ch.open) })
	time.Sleep(2 * time.Second)
	if n := ch.opens.Load(); n < 2 || n > 20 {
		t.Fatalf("port opened %d times in 2s without a host; want a bounded backoff (2..20)", n)
	}
}

// yamux over a real socketpair, as a virtio-serial port is one stream.
func TestYamuxOverSocketpair(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	agenttest.Must(t, err)
	guestF, hostF := os.NewFile(uintptr(fds[0]), "guest"), os.NewFile(uintptr(fds[1]), "host")
	hostConn, err := net.FileConn(hostF)
	agenttest.Must(t, err)
	_ = hostF.Close()
	srv := newTestServer(agentserver.ServerOptions{})
	runInBackground(t, func(ctx context.Context) error { return srv.ServeConn(ctx, guestF) })
	used := false
	d := newYamuxDialer(func(context.Context) (net.Conn, error) {
		if used {
			return nil, errors.New("socketpair already used")
		}
		used = true
		return hostConn, nil
	}, testLogger())
	t.Cleanup(func() { _ = d.Close() })
	c := NewClient(d.Dial, testLogger())
	healthy(t, c, "socketpair")
	code, out, _ := runExec(t, c, agentproto.ExecRequest{Argv: []string{"sh", "-c", "cat; exit 5"}}, strings.NewReader("over the pair"))
	if code != 5 || out != "over the pair" {
		t.Fatalf("exec: %d %q", code, out)
	}
}

// fakeFirecracker speaks the hybrid vsock protocol on a unix socket and
// forwards each connection to the agent's listener (the "guest port").
func fakeFirecracker(t *testing.T, agentSock string, answer func(port uint64) string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "fc.vsock")
	ln, err := net.Listen("unix", sock)
	agenttest.Must(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var buf []byte
				b := make([]byte, 1)
				for len(buf) < 64 {
					if _, err := c.Read(b); err != nil {
						return
					}
					if b[0] == '\n' {
						break
					}
					buf = append(buf, b[0])
				}
				var port uint64
				if _, err := fmt.Sscanf(string(buf), "CONNECT %d", &port); err != nil {
					return
				}
				if _, err := io.WriteString(c, answer(port)); err != nil {
					return
				}
				g, err := net.Dial("unix", agentSock)
				if err != nil {
					return
				}
				agentserver.Splice(c, g)
			}()
		}
	}()
	return sock
}

func TestHybridVsockDialer(t *testing.T) {
	agentSock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", agentSock)
	agenttest.Must(t, err)
	runInBackground(t, func(ctx context.Context) error { return newTestServer(agentserver.ServerOptions{}).Serve(ctx, ln) })
	fc := fakeFirecracker(t, agentSock, func(port uint64) string {
		if port != agentproto.DefaultVsockPort {
			return "NO\n"
		}
		return "OK 1073741824\n"
	})
	c := NewClient(HybridVsockDialer(fc, agentproto.DefaultVsockPort), testLogger())
	healthy(t, c, "hybrid vsock")
	code, out, _ := runExec(t, c, agentproto.ExecRequest{Argv: []string{"wc", "-c"}}, strings.NewReader("through firecracker"))
	if code != 0 || strings.TrimSpace(out) != "19" {
		t.Fatalf("exec: %d %q", code, out)
	}
	bad := NewClient(HybridVsockDialer(fc, 9), testLogger())
	if _, err := bad.Health(testCtx(t, 10*time.Second)); !errors.Is(err, agentproto.ErrHandshake) {
		t.Fatalf("refused CONNECT: err = %v, want ErrHandshake", err)
	}
}

func TestListenVsock(t *testing.T) {
	probe, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	testutil.Require(t, err == nil, "kernel without AF_VSOCK")
	_ = unix.Close(probe)
	port := uint32(40000 + os.Getpid()%20000)
	ln, err := agentserver.ListenVsock(port)
	agenttest.Must(t, err)
	if a := ln.Addr().(agentserver.VsockAddr); a.Port != port || ln.Addr().Network() != "vsock" {
		t.Fatalf("addr %v", ln.Addr())
	}
	if _, err := agentserver.ListenVsock(port); err == nil {
		t.Fatal("second listener on the same vsock port succeeded")
	}
	done := make(chan error, 1)
	go func() { _, err := ln.Accept(); done <- err }()
	time.Sleep(100 * time.Millisecond)
	agenttest.Must(t, ln.Close())
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("accept after close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Accept")
	}
}

func BenchmarkExecTrue(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr.name, func(b *testing.B) {
			c := tr.start(b, newTestServer(agentserver.ServerOptions{}))
			ctx := context.Background()
			for b.Loop() {
				code, err := c.Exec(ctx, agentproto.ExecRequest{Argv: []string{"true"}}, nil, nil, nil, nil, nil)
				if err != nil || code != 0 {
					b.Fatalf("true: %d %v", code, err)
				}
			}
		})
	}
}
