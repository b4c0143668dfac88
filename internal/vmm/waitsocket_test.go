package vmm

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWaitSocket: the wait ends when the socket answers, when the process
// exits first, or when ctx ends, whichever comes first, and says which.
func TestWaitSocket(t *testing.T) {
	dial := func(path string) func(context.Context) error {
		return func(ctx context.Context) error {
			c, err := (&net.Dialer{}).DialContext(ctx, "unix", path)
			if err == nil {
				c.Close()
			}
			return err
		}
	}
	start := func(script string) *Process {
		p, err := StartDetached(Command{Path: "/bin/sh", Args: []string{"-c", script}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Kill(p.PID, unix.SIGKILL) })
		return p
	}
	sock := filepath.Join(t.TempDir(), "ctl.sock")

	// Answers: a listener appears after a while.
	p := start("exec sleep 30")
	go func() {
		time.Sleep(100 * time.Millisecond)
		ln, err := net.Listen("unix", sock)
		if err == nil {
			t.Cleanup(func() { ln.Close() })
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := p.WaitSocket(ctx, sock, dial(sock)); err != nil {
		t.Fatalf("answering socket: %v", err)
	}

	// Exits first: the socket never answers.
	p = start("sleep 0.1; exit 3")
	missing := filepath.Join(t.TempDir(), "never.sock")
	if err := p.WaitSocket(ctx, missing, dial(missing)); !errors.Is(err, ErrExited) {
		t.Fatalf("exited process: %v, want ErrExited", err)
	}

	// Neither: ctx ends it.
	p = start("exec sleep 30")
	short, cancel2 := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel2()
	if err := p.WaitSocket(short, missing, dial(missing)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("silent process: %v, want deadline exceeded", err)
	}
}
