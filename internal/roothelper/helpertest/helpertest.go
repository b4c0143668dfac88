// Package helpertest runs a real root helper in-process for the tests of
// the packages that talk to it (roothelper itself, netattach, the daemon):
// one way to start it, wait for it, collect its JSON logs and stop it.
package helpertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/roothelper"
)

// Logs collects JSON log lines from concurrent writers (the helper's
// handlers) for a test that reads them while they are written.
type Logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns everything written so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Records returns the JSON log records written so far; a line that is not
// JSON fails the test.
func (l *Logs) Records(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader([]byte(l.String())))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", sc.Text(), err)
		}
		out = append(out, rec)
	}
	return out
}

// Count returns how many records have msg.
func (l *Logs) Count(t testing.TB, msg string) int {
	t.Helper()
	n := 0
	for _, r := range l.Records(t) {
		if r["msg"] == msg {
			n++
		}
	}
	return n
}

// Helper is a root helper running for one test.
type Helper struct {
	Client *roothelper.Client
	Socket string
	Logs   *Logs
}

// Start runs roothelper.Run with opts in-process and waits until it
// serves. Its socket is in a fresh directory that unprivileged uids may
// traverse (the socket itself stays 0600, as the helper makes it), so a
// test can call it as another uid; Socket, Logger and Ready are set here
// (a Ready of opts still runs). The helper is stopped, and must stop
// cleanly, when the test ends.
func Start(t testing.TB, opts roothelper.Options) *Helper {
	t.Helper()
	dir, err := os.MkdirTemp("", "banger-helper-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	h := &Helper{Socket: filepath.Join(dir, "helper.sock"), Logs: &Logs{}}
	opts.Socket = h.Socket
	opts.Logger = slog.New(slog.NewJSONHandler(h.Logs, nil))
	ready := make(chan struct{})
	also := opts.Ready
	opts.Ready = func() {
		if also != nil {
			also()
		}
		close(ready)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- roothelper.Run(ctx, opts) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		os.RemoveAll(dir)
		t.Fatalf("root helper did not start: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("root helper not ready after 10s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("root helper: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("root helper did not stop within 10s")
		}
		os.RemoveAll(dir)
	})
	h.Client = roothelper.NewClient(h.Socket)
	return h
}
