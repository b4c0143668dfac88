package rpc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/rpc"
)

type pipeParams struct {
	Text   string `json:"text"`
	Files  int    `json:"files"`  // how many pipes to pass
	Events int    `json:"events"` // progress events after the file
	Fail   bool   `json:"fail"`   // fail after passing the file
}

type pipeResult struct {
	Size int `json:"size"`
}

// pipeOpen passes the read end of pipes holding p.Text, surrounded by
// progress events so the client's decoder reads ahead past the file frame.
var methodPipeOpen = api.Method[pipeParams, pipeResult]{Name: "pipe.open"}

func pipeOpen(ctx context.Context, c *rpc.Call, p pipeParams) (pipeResult, error) {
	fail := func(err error) (pipeResult, error) { return pipeResult{}, err }
	c.Progress(progress.Event{Stage: "before", Message: "about to pass the pipe"})
	for range p.Files {
		r, w, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		_, werr := io.WriteString(w, p.Text)
		w.Close()
		if werr != nil {
			r.Close()
			return fail(werr)
		}
		err = c.SendFile(r)
		r.Close() // the client holds its own copy
		if err != nil {
			return fail(err)
		}
	}
	for i := range p.Events {
		c.Progress(progress.Event{Stage: "after", Done: int64(i), Total: int64(p.Events)})
	}
	if p.Fail {
		return fail(api.Errorf(api.CodeFailedPrecondition, "failing on purpose after the file"))
	}
	return pipeResult{Size: len(p.Text)}, nil
}

func serveFD(t *testing.T) *rpc.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "fd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ms := rpc.NewMethods()
	rpc.Register(ms, methodPipeOpen, pipeOpen)
	srv := rpc.NewServer(ms, rpc.ServerOptions{})
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("server did not stop within 10s")
		}
	})
	return rpc.NewClient(sock)
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// waitFDs waits (bounded) until the descriptor count is back to want: the
// server closes its side of a connection just after the client returns.
func waitFDs(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := openFDs(t)
		if got <= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open, want %d: a passed descriptor leaked", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCallWithFilePassesAReadablePipe(t *testing.T) {
	c := serveFD(t)
	text := strings.Repeat("through the socket ", 100)
	var events []progress.Event
	f, res, err := rpc.InvokeWithFile(context.Background(), c, methodPipeOpen, pipeParams{Text: text, Files: 1, Events: 200},
		rpc.CallOptions{OnEvent: func(ev progress.Event) { events = append(events, ev) }})
	if err != nil {
		t.Fatalf("InvokeWithFile: %v", err)
	}
	defer f.Close()
	if res.Size != len(text) {
		t.Errorf("result size = %d, want %d", res.Size, len(text))
	}
	if len(events) != 201 || events[0].Stage != "before" || events[200].Stage != "after" {
		t.Errorf("got %d events, want 1 before and 200 after the file", len(events))
	}
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.FD_CLOEXEC == 0 {
		t.Error("received descriptor is not close-on-exec")
	}
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read the passed pipe: %v", err)
	}
	if string(got) != text {
		t.Errorf("read %q through the passed pipe, want %q", got, text)
	}
}

func TestCallWithFileRefusals(t *testing.T) {
	c := serveFD(t)
	ctx := context.Background()
	// Warm up: the first call may open descriptors for good (epoll).
	if f, _, err := rpc.InvokeWithFile(ctx, c, methodPipeOpen, pipeParams{Text: "x", Files: 1}); err != nil {
		t.Fatalf("warm-up call: %v", err)
	} else {
		f.Close()
	}
	base := openFDs(t)

	cases := []struct {
		name   string
		p      pipeParams
		code   string // api code wanted, "" for a local error
		substr string
	}{
		{"no file", pipeParams{Text: "x"}, "", "without the file"},
		{"two files", pipeParams{Text: "x", Files: 2}, "", "more than one file"},
		{"error after the file", pipeParams{Text: "x", Files: 1, Events: 3, Fail: true}, api.CodeFailedPrecondition, "on purpose"},
	}
	for _, tc := range cases {
		f, _, err := rpc.InvokeWithFile(ctx, c, methodPipeOpen, tc.p)
		if err == nil {
			f.Close()
			t.Errorf("%s: InvokeWithFile succeeded, want an error", tc.name)
			continue
		}
		if tc.code != "" && api.CodeOf(err) != tc.code {
			t.Errorf("%s: error %v has code %s, want %s", tc.name, err, api.CodeOf(err), tc.code)
		}
		if !strings.Contains(err.Error(), tc.substr) {
			t.Errorf("%s: error %q does not say %q", tc.name, err, tc.substr)
		}
		waitFDs(t, base)
	}

	// A plain Call to a file-passing method still works: the kernel drops
	// the descriptor a plain read does not take.
	res, err := rpc.Invoke(ctx, c, methodPipeOpen, pipeParams{Text: "abc", Files: 1, Events: 5})
	if err != nil {
		t.Fatalf("plain Call: %v", err)
	}
	if res.Size != 3 {
		t.Errorf("plain Call result size = %d, want 3", res.Size)
	}
	waitFDs(t, base)
}

func TestCallWithFileUnknownMethod(t *testing.T) {
	c := serveFD(t)
	_, _, err := rpc.InvokeWithFile(context.Background(), c, api.Method[api.Empty, api.Empty]{Name: "no.such"}, api.Empty{})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeUnimplemented {
		t.Errorf("InvokeWithFile(no.such) = %v, want code %s", err, api.CodeUnimplemented)
	}
}
