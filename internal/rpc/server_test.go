package rpc_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
)

// limitMethods is the method table of the limit tests: t.ping, and
// t.count, which counts data frames and their bytes until the client's eof.
func limitMethods() *rpc.Methods {
	ms := rpc.NewMethods()
	rpc.Register(ms, api.Method[json.RawMessage, api.Empty]{Name: "t.ping"}, func(ctx context.Context, c *rpc.Call, _ json.RawMessage) (api.Empty, error) {
		return api.Empty{}, nil
	})
	rpc.Register(ms, api.Method[api.Empty, map[string]int]{Name: "t.count"}, func(ctx context.Context, c *rpc.Call, _ api.Empty) (map[string]int, error) {
		var frames, bytes int
		for {
			f, err := c.Recv(ctx)
			if errors.Is(err, io.EOF) {
				return map[string]int{"frames": frames, "bytes": bytes}, nil
			}
			if err != nil {
				return nil, err
			}
			frames++
			bytes += len(f.Payload)
		}
	})
	return ms
}

// serveLimits serves limitMethods on a fresh socket through ln (nil: a plain
// unix listener) and returns the socket and Serve's result channel.
func serveLimits(t *testing.T, opts rpc.ServerOptions, wrap func(net.Listener) net.Listener) (string, *served) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var l net.Listener = ln
	if wrap != nil {
		l = wrap(ln)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := &served{c: make(chan struct{})}
	srv := rpc.NewServer(limitMethods(), opts)
	go func() {
		done.err = srv.Serve(ctx, l)
		close(done.c)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done.c:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return sock, done
}

// served is Serve's outcome: c is closed once it returned err.
type served struct {
	c   chan struct{}
	err error
}

// readErrorFrame reads frames from a raw connection until an error frame,
// bounded by d.
func readErrorFrame(t *testing.T, conn net.Conn, d time.Duration) *api.Error {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(d))
	dec := json.NewDecoder(bufio.NewReader(conn))
	for {
		var f rpc.Frame
		if err := dec.Decode(&f); err != nil {
			t.Fatalf("read error frame: %v", err)
		}
		if f.Type == rpc.FrameError && f.Error != nil {
			return f.Error
		}
	}
}

// flakyListener fails its first n accepts with err, recording when.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	n     int
	err   error
	fails []time.Time
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.fails) < l.n {
		l.fails = append(l.fails, time.Now())
		l.mu.Unlock()
		return nil, l.err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

func (l *flakyListener) failures() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.fails...)
}

func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", errno)}
}

// Running out of descriptors (or kernel memory) is not the end of the
// server: it backs off, doubling, and serves again once accept works.
func TestServeBacksOffOnTransientAcceptErrors(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		t.Run(errno.Error(), func(t *testing.T) {
			fl := &flakyListener{n: 6, err: acceptErr(errno)}
			sock, done := serveLimits(t, rpc.ServerOptions{}, func(l net.Listener) net.Listener { fl.Listener = l; return fl })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := rpc.NewClient(sock).CallRaw(ctx, "t.ping", nil, nil); err != nil {
				t.Fatalf("call after %d failed accepts: %v", fl.n, err)
			}
			select {
			case <-done.c:
				t.Fatalf("Serve returned on %v: %v", errno, done.err)
			default:
			}
			f := fl.failures()
			if len(f) != fl.n {
				t.Fatalf("%d failed accepts, want %d", len(f), fl.n)
			}
			// 5, 10, 20, 40, 80 ms between the six failures: backing off,
			// not spinning.
			for i, want := 1, 5*time.Millisecond; i < len(f); i, want = i+1, want*2 {
				if gap := f[i].Sub(f[i-1]); gap < want {
					t.Errorf("gap %d between failed accepts %s, want at least %s", i, gap, want)
				}
			}
		})
	}
}

// A persistent accept error (the listener itself is broken) still ends
// Serve with an error saying what failed.
func TestServeReturnsOnPermanentAcceptError(t *testing.T) {
	fl := &flakyListener{n: 1 << 30, err: acceptErr(syscall.EINVAL)}
	_, done := serveLimits(t, rpc.ServerOptions{}, func(l net.Listener) net.Listener { fl.Listener = l; return fl })
	select {
	case <-done.c:
		if err := done.err; err == nil || !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), "accept on") {
			t.Fatalf("Serve = %v, want the accept error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve kept going on a permanent accept error")
	}
}

// A client that connects and sends nothing (or half a request) is answered
// with an error and hung up on once the request deadline passes.
func TestRequestDeadline(t *testing.T) {
	const timeout = 300 * time.Millisecond
	sock, _ := serveLimits(t, rpc.ServerOptions{RequestTimeout: timeout}, nil)
	for name, send := range map[string]string{"silent": "", "half a request": `{"v":1,"method":"t.pi`} {
		t.Run(name, func(t *testing.T) {
			conn, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			start := time.Now()
			if send != "" {
				if _, err := io.WriteString(conn, send); err != nil {
					t.Fatal(err)
				}
			}
			e := readErrorFrame(t, conn, 5*time.Second)
			took := time.Since(start)
			if e.Code != api.CodeInvalidArgument || !strings.Contains(e.Message, "no complete request within 300ms") {
				t.Fatalf("error frame = %+v", e)
			}
			if took < timeout || took > 3*time.Second {
				t.Fatalf("hung up after %s, want about %s", took, timeout)
			}
			_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			if n, err := conn.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
				t.Fatalf("connection still open after the error: %d %v", n, err)
			}
		})
	}
}

// The request deadline covers the request only: a stream may stay quiet
// far longer afterwards.
func TestStreamOutlivesRequestTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	sock, _ := serveLimits(t, rpc.ServerOptions{RequestTimeout: timeout}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := rpc.NewClient(sock).OpenRaw(ctx, "t.count", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	time.Sleep(4 * timeout)
	if err := s.Send("x", "late"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * timeout)
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	f, err := s.Next()
	if err != nil || f.Type != rpc.FrameResult || !strings.Contains(string(f.Result), `"frames":1`) {
		t.Fatalf("quiet stream: %+v %v", f, err)
	}
}

// Requests over the cap are refused with a typed error without being read
// whole; requests under it pass.
func TestRequestSizeCap(t *testing.T) {
	sock, _ := serveLimits(t, rpc.ServerOptions{MaxRequestBytes: 4 << 10}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := rpc.NewClient(sock)
	if err := c.CallRaw(ctx, "t.ping", map[string]string{"pad": strings.Repeat("a", 3<<10)}, nil); err != nil {
		t.Fatalf("3 KiB request under a 4 KiB cap: %v", err)
	}
	err := c.CallRaw(ctx, "t.ping", map[string]string{"pad": strings.Repeat("a", 64<<20)}, nil)
	if api.CodeOf(err) != api.CodeInvalidArgument || !strings.Contains(err.Error(), "request is larger than the 4 KiB limit") {
		t.Fatalf("64 MiB request: %v", err)
	}
	// The server is fine afterwards.
	if err := c.CallRaw(ctx, "t.ping", nil, nil); err != nil {
		t.Fatalf("ping after the big request: %v", err)
	}
}

// Each data frame is capped, the stream as a whole is not.
func TestDataFrameCap(t *testing.T) {
	sock, _ := serveLimits(t, rpc.ServerOptions{MaxRequestBytes: 4 << 10, MaxFrameBytes: 8 << 10}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := rpc.NewClient(sock)

	s, err := c.OpenRaw(ctx, "t.count", nil)
	if err != nil {
		t.Fatal(err)
	}
	chunk := strings.Repeat("b", 6<<10)
	const frames = 200 // 1.2 MB in all: far over both caps
	for range frames {
		if err := s.Send("x", chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	f, err := s.Next()
	s.Close()
	if err != nil || !strings.Contains(string(f.Result), fmt.Sprintf(`"frames":%d`, frames)) {
		t.Fatalf("stream of small frames: %+v %v", f, err)
	}

	s, err = c.OpenRaw(ctx, "t.count", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_ = s.Send("x", strings.Repeat("c", 64<<10)) // may fail once the server hangs up
	_, err = s.Next()
	if api.CodeOf(err) != api.CodeInvalidArgument || !strings.Contains(err.Error(), "data frame larger than the 8 KiB limit") {
		t.Fatalf("64 KiB frame: %v", err)
	}
}

// Beyond MaxConns a connection is refused at once with unavailable; the
// slots come back when the holders go (or hit the request deadline).
func TestConnectionCap(t *testing.T) {
	sock, _ := serveLimits(t, rpc.ServerOptions{MaxConns: 2, RequestTimeout: 30 * time.Second}, nil)
	c := rpc.NewClient(sock)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var held []net.Conn
	for range 2 {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, conn)
	}
	// The holders are accepted (in their slots) before the next one comes.
	deadline := time.Now().Add(5 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		start := time.Now()
		err = c.CallRaw(ctx, "t.ping", nil, nil)
		if err != nil && time.Since(start) > 2*time.Second {
			t.Fatalf("refusal took %s", time.Since(start))
		}
		if api.CodeOf(err) == api.CodeUnavailable {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if api.CodeOf(err) != api.CodeUnavailable || !strings.Contains(err.Error(), "all 2 connections are in use") {
		t.Fatalf("third connection: %v, want unavailable", err)
	}
	for _, conn := range held {
		conn.Close()
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		err = c.CallRaw(ctx, "t.ping", nil, nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slots not freed after the holders left: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
