package agentclient

import (
	"github.com/bangerdev/banger/internal/guest/guestagent/agenttest"

	"context"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentserver"
)

// QEMU's chardev accepts the host long before the guest opens its port and
// holds the host's bytes until it does (measured on a TCG microvm: the
// HELLOs queued for seconds arrive in one burst right after the guest's
// PORT_OPEN). The first request must then be answered as soon as the
// guest starts serving, not after a handshake timeout.
func TestYamuxHostConnectsBeforeGuest(t *testing.T) {
	srv := newTestServer(agentserver.ServerOptions{})
	ch := newFakeChardev(t, true)
	d := NewYamuxDialer(ch.sock, testLogger())
	t.Cleanup(func() { _ = d.Close() })
	c := NewClient(d.Dial, testLogger())

	res := make(chan error, 1)
	go func() {
		_, err := c.Health(testCtx(t, 30*time.Second))
		res <- err
	}()
	select {
	case err := <-res:
		t.Fatalf("health answered with no guest: %v", err)
	case <-time.After(1500 * time.Millisecond): // HELLOs pile up in the socket
	}
	started := time.Now()
	runInBackground(t, func(ctx context.Context) error { return srv.ServePort(ctx, ch.open) })
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("health once the guest serves: %v", err)
		}
		if took := time.Since(started); took > 2*time.Second {
			t.Fatalf("first health took %s after the guest started serving; want well under a handshake timeout", took)
		} else {
			t.Logf("first health %s after the guest started serving", took)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("health never answered after the guest started serving")
	}
}

// The guest has been polling an absent host (backing off); a host that
// connects now is answered within the backoff, not a handshake timeout.
func TestYamuxHostConnectsAfterGuest(t *testing.T) {
	srv := newTestServer(agentserver.ServerOptions{})
	ch := newFakeChardev(t, true)
	runInBackground(t, func(ctx context.Context) error { return srv.ServePort(ctx, ch.open) })
	time.Sleep(2 * time.Second) // the backoff reaches its maximum
	d := NewYamuxDialer(ch.sock, testLogger())
	t.Cleanup(func() { _ = d.Close() })
	start := time.Now()
	healthy(t, NewClient(d.Dial, testLogger()), "host after guest")
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("first health took %s; want about the port backoff (%s)", took, agentproto.PortBackoffMax)
	}
}

// A session ends while a handler is still busy: here a forward whose TCP
// peer neither sends nor closes, so its copy loop never ends by itself.
// The guest must still take the host's next session at once, rather than
// wait for that handler (which held every later handshake off for good).
func TestYamuxReconnectWithBusyForward(t *testing.T) {
	for _, eof := range []bool{true, false} {
		t.Run("eofOnHangup="+strconv.FormatBool(eof), func(t *testing.T) {
			t.Parallel()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			agenttest.Must(t, err)
			t.Cleanup(func() { _ = ln.Close() })
			// A peer that never answers and, even after EOF, keeps its
			// side open (as a server waiting on a request would).
			peerEOF, release := make(chan struct{}), make(chan struct{})
			t.Cleanup(func() { close(release) })
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				_, _ = io.Copy(io.Discard, c)
				close(peerEOF)
				<-release
			}()

			srv := newTestServer(agentserver.ServerOptions{})
			ch := newFakeChardev(t, eof)
			runInBackground(t, func(ctx context.Context) error { return srv.ServePort(ctx, ch.open) })
			d := NewYamuxDialer(ch.sock, testLogger())
			t.Cleanup(func() { _ = d.Close() })
			c := NewClient(d.Dial, testLogger())
			fwd, err := c.Forward(testCtx(t, 20*time.Second), strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
			agenttest.Must(t, err)
			defer fwd.Close()
			_, err = fwd.Write([]byte("hello"))
			agenttest.Must(t, err)

			d.mu.Lock()
			_ = d.sess.Close() // the host's side of the session dies
			d.mu.Unlock()
			start := time.Now()
			healthy(t, c, "after the session with a busy forward died")
			if took := time.Since(start); took > 3*time.Second {
				t.Fatalf("reconnect took %s; want about the port backoff", took)
			}
			select {
			case <-peerEOF: // the session's end reached the TCP peer
			case <-time.After(10 * time.Second):
				t.Fatal("the forward of a dead session never closed its TCP side")
			}
		})
	}
}
