package e2e

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/bangerdev/banger/internal/testutil"
)

// banger vm exec through the CLI: stdin piped, Ctrl-C delivered to the guest
// process, and a pty whose size follows the client's terminal.
func TestExecStdinSignalAndPTY(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	in.ok("banger", "vm", "create", "--start", "--name", "ex", "--memory", "512M")

	// stdin
	cmd := exec.Command(filepath.Join(binDir, "banger"), "vm", "exec", "-i", "ex", "--", "sh", "-c", "tr a-z A-Z; echo done")
	cmd.Env = in.env()
	cmd.Stdin = strings.NewReader("piped through the agent\n")
	out, err := cmd.Output()
	if err != nil || string(out) != "PIPED THROUGH THE AGENT\ndone\n" {
		t.Fatalf("stdin piping: %q, %v", out, err)
	}

	// Ctrl-C reaches the guest process, which decides the exit code.
	cmd = exec.Command(filepath.Join(binDir, "banger"), "vm", "exec", "ex", "--", "sh", "-c",
		`trap 'echo got-int; exit 42' INT; echo ready; while :; do sleep 0.1; done`)
	cmd.Env = in.env()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || sc.Text() != "ready" {
		t.Fatalf("guest command did not start: %q", sc.Text())
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var rest []string
	for sc.Scan() {
		rest = append(rest, sc.Text())
	}
	err = cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 42 || !strings.Contains(strings.Join(rest, "\n"), "got-int") {
		t.Fatalf("after Ctrl-C: %v, output %q (want the guest's trap and exit 42)", err, rest)
	}

	// A pty: the guest sees a terminal of the client's size, and a resize.
	cmd = exec.Command(filepath.Join(binDir, "banger"), "vm", "exec", "-t", "ex", "--", "sh", "-c",
		`tty; stty size; trap 'stty size; exit 0' WINCH; echo waiting; while :; do sleep 0.1; done`)
	cmd.Env = in.env()
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lines := make(chan string, 32)
	go func() {
		r := bufio.NewScanner(f)
		for r.Scan() {
			lines <- strings.TrimSpace(r.Text())
		}
		close(lines)
	}()
	expect := func(want func(string) bool, what string) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("pty closed before %s", what)
				}
				if want(l) {
					return
				}
			case <-deadline:
				t.Fatalf("no %s within 30s", what)
			}
		}
	}
	expect(func(l string) bool { return strings.HasPrefix(l, "/dev/pts/") }, "tty name")
	expect(func(l string) bool { return l == "30 100" }, "initial size 30 100")
	expect(func(l string) bool { return l == "waiting" }, "waiting")
	if err := pty.Setsize(f, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
		t.Fatal(err)
	}
	expect(func(l string) bool { return l == "40 120" }, "resized 40 120")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("pty exec ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("pty exec did not end")
	}
}
