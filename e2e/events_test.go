package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/testutil"
)

// lineStream runs a long-lived banger command and collects its stdout
// lines and stderr.
type lineStream struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []string
	stderr bytes.Buffer
}

func startStream(t *testing.T, in *instance, args ...string) *lineStream {
	t.Helper()
	ls := &lineStream{cmd: exec.Command(filepath.Join(binDir, "banger"), args...)}
	ls.cmd.Env = in.env()
	ls.cmd.Stderr = &lockedWriter{mu: &ls.mu, w: &ls.stderr}
	out, err := ls.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			ls.mu.Lock()
			ls.lines = append(ls.lines, sc.Text())
			ls.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ls.cmd.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { ls.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			ls.cmd.Process.Kill()
		}
	})
	return ls
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (ls *lineStream) snapshot() ([]string, string) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return append([]string(nil), ls.lines...), ls.stderr.String()
}

// waitFor polls until cond holds on the collected output.
func (ls *lineStream) waitFor(t *testing.T, what string, within time.Duration, cond func(lines []string, stderr string) bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if l, e := ls.snapshot(); cond(l, e) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	l, e := ls.snapshot()
	t.Fatalf("no %s within %s\nstdout:\n%s\nstderr:\n%s", what, within, strings.Join(l, "\n"), e)
}

// Lifecycle events of a real VM arrive in order, each with the op_id of the
// request that caused it; a dead VMM is an error event with its reason;
// vm ls -w redraws on events; --format and uptime after a daemon restart.
func TestEventsOrderAndWatch(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	ev := startStream(t, in, "events", "--json")
	ev.waitFor(t, "subscription notice", 30*time.Second, func(_ []string, e string) bool {
		return strings.Contains(e, "watching lifecycle events")
	})
	lsw := startStream(t, in, "vm", "ls", "-w")
	lsw.waitFor(t, "first drawing", 30*time.Second, func(l []string, _ string) bool {
		return len(l) > 1 && strings.HasPrefix(l[1], "NAME")
	})

	in.ok("banger", "vm", "create", "--start", "--name", "e1", "--memory", "512M")
	lsw.waitFor(t, "e1 running in vm ls -w", 30*time.Second, func(l []string, _ string) bool {
		return len(l) > 0 && strings.Contains(lastDrawing(l), "e1") && strings.Contains(lastDrawing(l), "running")
	})

	ev.waitFor(t, "ready event", 30*time.Second, func(l []string, _ string) bool { return len(l) >= 3 })
	if got := eventKinds(t, ev); strings.Join(got, ",") != "created,started,ready" {
		t.Fatalf("events of vm create --start: %v, want created,started,ready", got)
	}

	// --format, and an uptime that survives a daemon restart (the VM is
	// re-adopted).
	out := in.ok("banger", "vm", "ls", "--format", "{{.Name}}|{{.State}}|{{.IP}}|{{.Uptime}}|{{.Memory}}")
	f := strings.Split(strings.TrimSpace(out), "|")
	if len(f) != 5 || f[0] != "e1" || f[1] != "running" || !strings.HasPrefix(f[2], "10.") || f[3] == "-" || f[4] != "512M" {
		t.Fatalf("vm ls --format: %q", out)
	}
	in.ok("banger", "daemon", "stop")
	out = in.ok("banger", "vm", "ls", "--format", "{{.Name}} {{.Uptime}}")
	if f := strings.Fields(out); len(f) != 2 || f[1] == "-" {
		t.Fatalf("uptime after a daemon restart: %q", out)
	}
	// The daemon that watched events is gone: its watchers ended. Start
	// new ones on the new daemon.
	ev = startStream(t, in, "events", "--json", "--vm", "e1")
	ev.waitFor(t, "subscription notice", 30*time.Second, func(_ []string, e string) bool {
		return strings.Contains(e, "watching lifecycle events")
	})
	lsw = startStream(t, in, "vm", "ls", "-w")
	lsw.waitFor(t, "first drawing", 30*time.Second, func(l []string, _ string) bool {
		return strings.Contains(lastDrawing(l), "e1")
	})

	in.ok("banger", "vm", "stop", "e1")
	in.ok("banger", "vm", "start", "e1")
	in.ok("banger", "vm", "suspend", "e1")
	in.ok("banger", "vm", "resume", "e1")
	vm := in.inspect("e1")
	if err := syscall.Kill(vm.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(t, "error event", 60*time.Second, func(l []string, _ string) bool {
		return strings.Contains(strings.Join(l, "\n"), `"kind":"error"`)
	})
	in.ok("banger", "vm", "rm", "e1")
	want := []string{"stopping", "stopped", "started", "ready", "suspended", "resumed", "error", "removed"}
	ev.waitFor(t, "removed event", 30*time.Second, func(l []string, _ string) bool { return len(l) >= len(want) })
	kinds := eventKinds(t, ev)
	if strings.Join(kinds, ",") != strings.Join(want, ",") {
		t.Fatalf("events after the restart: %v, want %v", kinds, want)
	}
	lsw.waitFor(t, "e1 gone from vm ls -w", 30*time.Second, func(l []string, _ string) bool {
		return !strings.Contains(lastDrawing(l), "e1")
	})
}

// eventKinds decodes every events --json line, checking each carries its
// VM, op_id and time, and an error its reason.
func eventKinds(t *testing.T, ls *lineStream) []string {
	t.Helper()
	lines, _ := ls.snapshot()
	var kinds []string
	for _, l := range lines {
		var e api.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("events --json line %q: %v", l, err)
		}
		if e.VM != "e1" || e.OpID == "" || e.Time.IsZero() {
			t.Fatalf("event without vm, op_id or time: %q", l)
		}
		if e.Kind == "error" && !strings.Contains(e.Reason, "exited unexpectedly") {
			t.Fatalf("error event without its reason: %q", l)
		}
		kinds = append(kinds, e.Kind)
	}
	return kinds
}

// lastDrawing is the text after the last "# TIME" line of vm ls -w.
func lastDrawing(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "# ") {
			return strings.Join(lines[i:], "\n")
		}
	}
	return ""
}
