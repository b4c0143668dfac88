package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/testutil"
)

const sessReplayBytes = 64 << 10

// sessInstance is a VM instance whose daemon keeps sessReplayBytes of
// output per detached session, with one VM, "sess", running.
func sessInstance(t *testing.T) *instance {
	in := vmInstance(t)
	if err := os.WriteFile(in.p.ConfigFile(), []byte(fmt.Sprintf("[sessions]\nreplay_bytes = %d\n", sessReplayBytes)), 0o600); err != nil {
		t.Fatal(err)
	}
	in.ok("banger", "daemon", "stop") // the next command starts it on the new config
	in.startVM("sess")
	return in
}

// sessAttach runs banger vm attach in the background and returns its
// stdout lines; wait reports how it ended.
func sessAttach(t *testing.T, in *instance, id string) (cmd *exec.Cmd, lines <-chan string, wait func() (int, string)) {
	t.Helper()
	cmd = exec.Command(filepath.Join(binDir, "banger"), "vm", "attach", "sess", id)
	cmd.Env = in.env()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 1024)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		defer close(ch)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	wait = func() (int, string) {
		t.Helper()
		done := make(chan error, 1)
		go func() { <-scanned; done <- cmd.Wait() }()
		select {
		case err := <-done:
			if ee, ok := err.(*exec.ExitError); ok {
				return ee.ExitCode(), stderr.String()
			}
			if err != nil {
				t.Fatalf("attach: %v", err)
			}
			return 0, stderr.String()
		case <-time.After(3 * time.Minute):
			_ = cmd.Process.Kill()
			t.Fatalf("attach did not end within 3m; stderr %s", stderr.String())
			return 0, ""
		}
	}
	return cmd, ch, wait
}

// sessLine waits for the next line, failing after timeout.
func sessLine(t *testing.T, lines <-chan string, timeout time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatal("attach output ended early")
		}
		return l
	case <-time.After(timeout):
		t.Fatalf("no output line within %s", timeout)
	}
	return ""
}

func sessLineNumber(t *testing.T, l string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimPrefix(l, "line "))
	if err != nil || !strings.HasPrefix(l, "line ") {
		t.Fatalf("unexpected output line %q", l)
	}
	return n
}

func sessList(t *testing.T, in *instance) api.SessionList {
	t.Helper()
	var l api.SessionList
	if err := json.Unmarshal([]byte(in.ok("banger", "vm", "sessions", "sess", "--json")), &l); err != nil {
		t.Fatal(err)
	}
	return l
}

func sessFind(t *testing.T, in *instance, id string) api.DetachedSession {
	t.Helper()
	l := sessList(t, in)
	for _, s := range l.Detached {
		if s.ID == id {
			return s
		}
	}
	t.Fatalf("session %s not in vm sessions: %+v (error %q)", id, l.Detached, l.DetachedError)
	return api.DetachedSession{}
}

func sessWaitExited(t *testing.T, in *instance, id string, timeout time.Duration) api.DetachedSession {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := sessFind(t, in, id)
		if s.State == "exited" {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s still %s after %s", id, s.State, timeout)
		}
		time.Sleep(time.Second)
	}
}

// A detached session outlives its clients and the daemon: a killed client
// leaves it running, a new client replays the earlier lines then follows
// live ones, a restarted daemon attaches it again, and its exit code is
// kept once it has finished.
func TestSessDetachAttachSurvivesClientAndDaemon(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := sessInstance(t)
	const total = 400
	id := strings.TrimSpace(in.ok("banger", "vm", "exec", "--detach", "sess", "--", "sh", "-c",
		fmt.Sprintf(`i=0; while [ $i -lt %d ]; do i=$((i+1)); echo "line $i"; sleep 0.1; done; exit 5`, total)))
	if len(id) != 16 {
		t.Fatalf("exec --detach printed %q, want a session id", id)
	}

	// First client: replay from line 1, then live lines; then it is killed.
	cmd, lines, _ := sessAttach(t, in, id)
	if l := sessLine(t, lines, time.Minute); l != "line 1" {
		t.Fatalf("first line %q, want the replay to start at line 1", l)
	}
	last := 1
	for last < 10 {
		n := sessLineNumber(t, sessLine(t, lines, time.Minute))
		if n != last+1 {
			t.Fatalf("line %d after %d", n, last)
		}
		last = n
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if s := sessFind(t, in, id); s.State != "running" || s.ExitCode != nil || s.TTY {
		t.Fatalf("after the client was killed: %+v", s)
	}

	// Second client: lines 1.. again (replayed), and then lines the first
	// never saw (live).
	cmd, lines, _ = sessAttach(t, in, id)
	for want := 1; want <= last+5; want++ {
		if n := sessLineNumber(t, sessLine(t, lines, time.Minute)); n != want {
			t.Fatalf("second client: line %d, want %d", n, want)
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()

	// The daemon is killed and started again: the session lives in the
	// agent, so it is still there to attach to.
	pid := ReadPidOrFail(t, in.p.PidFile())
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	in.ok("banger", "daemon", "start")
	if s := sessFind(t, in, id); s.State != "running" {
		t.Fatalf("after the daemon restart: %+v", s)
	}
	_, lines, wait := sessAttach(t, in, id)
	for want := 1; want <= total; want++ {
		if n := sessLineNumber(t, sessLine(t, lines, 2*time.Minute)); n != want {
			t.Fatalf("after restart: line %d, want %d", n, want)
		}
	}
	if code, stderr := wait(); code != 5 {
		t.Fatalf("attach ended with %d (stderr %q), want the session's exit code 5", code, stderr)
	}
	s := sessFind(t, in, id)
	if s.State != "exited" || s.ExitCode == nil || *s.ExitCode != 5 || s.EndedAt == nil {
		t.Fatalf("finished session: %+v", s)
	}
	table := in.ok("banger", "vm", "sessions", "sess")
	if !strings.Contains(table, id) || !strings.Contains(table, "exited") {
		t.Fatalf("vm sessions table:\n%s", table)
	}

	// Bad input: a malformed id and an unknown one.
	if _, errOut, code := in.run("banger", "vm", "attach", "sess", "../../x"); code == 0 || !strings.Contains(errOut, "not a session id") {
		t.Fatalf("malformed id: exit %d, %s", code, errOut)
	}
	if _, errOut, code := in.run("banger", "vm", "attach", "sess", "0123456789abcdef"); code == 0 || !strings.Contains(errOut, "no session") {
		t.Fatalf("unknown id: exit %d, %s", code, errOut)
	}
}

// A session that prints 10 MB replays at most replay_bytes, its tail; and
// what a session prints reaches the user escaped unless --raw.
func TestSessReplayRingIsBounded(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := sessInstance(t)
	id := strings.TrimSpace(in.ok("banger", "vm", "exec", "--detach", "sess", "--", "sh", "-c",
		`head -c 10000000 /dev/zero | tr '\0' y; echo; echo END`))
	s := sessWaitExited(t, in, id, 3*time.Minute)
	if s.OutputBytes != 10000000+1+4 || *s.ExitCode != 0 {
		t.Fatalf("finished session: %+v", s)
	}
	cmd := exec.Command(filepath.Join(binDir, "banger"), "vm", "attach", "sess", id)
	cmd.Env = in.env()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("attach: %v: %s", err, errOut.String())
	}
	if out.Len() > sessReplayBytes || out.Len() < sessReplayBytes/2 {
		t.Fatalf("replayed %d bytes, want at most (and about) %d", out.Len(), sessReplayBytes)
	}
	if !strings.HasSuffix(out.String(), "yyy\nEND\n") || strings.Trim(strings.TrimSuffix(out.String(), "\nEND\n"), "y") != "" {
		t.Fatalf("replay is not the output's tail: ...%q", out.String()[max(0, out.Len()-40):])
	}

	// A hostile guest's escape sequence (OSC 52 writes the clipboard).
	osc := strings.TrimSpace(in.ok("banger", "vm", "exec", "--detach", "sess", "--", "printf", `\033]52;c;ZXZpbA==\007osc-done\n`))
	sessWaitExited(t, in, osc, time.Minute)
	if got := in.ok("banger", "vm", "attach", "sess", osc); strings.ContainsRune(got, 0x1b) || got != `\x1b]52;c;ZXZpbA==\x07osc-done`+"\n" {
		t.Fatalf("attach wrote %q, want the escape made visible", got)
	}
	if got := in.ok("banger", "vm", "attach", "--raw", "sess", osc); got != "\x1b]52;c;ZXZpbA==\x07osc-done\n" {
		t.Fatalf("attach --raw wrote %q, want the guest's bytes", got)
	}
}

// A tty session: the client's terminal goes raw, the detach keys leave the
// command running, and typed keys (Ctrl-C) reach the guest's terminal.
func TestSessTTYDetachKeys(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := sessInstance(t)
	id := strings.TrimSpace(in.ok("banger", "vm", "exec", "--detach", "-t", "sess", "--", "sh", "-c",
		`tty >/dev/null && echo tty-ready; trap 'echo got-int; exit 9' INT; while :; do sleep 0.2; done`))
	attach := func() (*os.File, *exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(filepath.Join(binDir, "banger"), "vm", "attach", "sess", id)
		cmd.Env = in.env()
		f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 80})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		t.Cleanup(func() { _ = cmd.Process.Kill(); f.Close() })
		return f, cmd, &buf
	}
	// readUntil reads the pty until want shows (bounded in time).
	readUntil := func(f *os.File, buf *bytes.Buffer, want string) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		b := make([]byte, 4096)
		for !strings.Contains(buf.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q on the terminal within 1m; got %q", want, buf.String())
			}
			_ = f.SetReadDeadline(time.Now().Add(time.Second))
			n, err := f.Read(b)
			buf.Write(b[:n])
			if err != nil && !os.IsTimeout(err) {
				if err == io.EOF || strings.Contains(err.Error(), "input/output error") {
					if !strings.Contains(buf.String(), want) {
						t.Fatalf("terminal closed before %q; got %q", want, buf.String())
					}
					return
				}
			}
		}
	}
	waitExit := func(cmd *exec.Cmd) int {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if ee, ok := err.(*exec.ExitError); ok {
				return ee.ExitCode()
			}
			return 0
		case <-time.After(time.Minute):
			t.Fatal("attach did not end within 1m")
		}
		return -1
	}

	f, cmd, buf := attach()
	readUntil(f, buf, "tty-ready")
	if _, err := f.Write([]byte{0x10, 0x11}); err != nil { // Ctrl-P Ctrl-Q
		t.Fatal(err)
	}
	readUntil(f, buf, "detached from session "+id)
	if code := waitExit(cmd); code != 0 {
		t.Fatalf("detach exited %d: %q", code, buf.String())
	}
	if s := sessFind(t, in, id); s.State != "running" || !s.TTY {
		t.Fatalf("after detach keys: %+v", s)
	}

	f, cmd, buf = attach()
	readUntil(f, buf, "tty-ready")                   // replayed
	if _, err := f.Write([]byte{0x03}); err != nil { // Ctrl-C, typed into the guest's terminal
		t.Fatal(err)
	}
	readUntil(f, buf, "got-int")
	if code := waitExit(cmd); code != 9 {
		t.Fatalf("attach after Ctrl-C exited %d, want 9: %q", code, buf.String())
	}
	if s := sessFind(t, in, id); s.State != "exited" || s.ExitCode == nil || *s.ExitCode != 9 {
		t.Fatalf("after Ctrl-C: %+v", s)
	}
}
