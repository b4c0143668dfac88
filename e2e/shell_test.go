package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/testutil"
)

// ptySession runs banger on a real pseudo-terminal, as a user at a terminal
// would: stdin, stdout and stderr are the pty's slave side, which is also the
// process's controlling terminal.
type ptySession struct {
	t     *testing.T
	cmd   *exec.Cmd
	ptm   *os.File // master: what the test types and reads
	pts   *os.File // slave: kept open to read its termios
	mu    sync.Mutex
	out   bytes.Buffer
	done  chan error
	start *unix.Termios
}

func startPTY(t *testing.T, in *instance, args ...string) *ptySession {
	t.Helper()
	ptm, pts, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	if err := pty.Setsize(ptm, &pty.Winsize{Rows: 24, Cols: 80}); err != nil {
		t.Fatal(err)
	}
	st, err := unix.IoctlGetTermios(int(pts.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "banger"), args...)
	cmd.Env = append(in.env(), "TERM=xterm")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &ptySession{t: t, cmd: cmd, ptm: ptm, pts: pts, done: make(chan error, 1), start: st}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ptm.Read(buf)
			s.mu.Lock()
			s.out.Write(buf[:n])
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		ptm.Close()
		pts.Close()
	})
	return s
}

func (s *ptySession) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// waitRaw waits until banger has put the terminal into raw mode (no echo, no
// line editing): the shell is attached.
func (s *ptySession) waitRaw(within time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		st, err := unix.IoctlGetTermios(int(s.pts.Fd()), unix.TCGETS)
		if err == nil && st.Lflag&(unix.ECHO|unix.ICANON) == 0 {
			return
		}
		select {
		case err := <-s.done:
			s.t.Fatalf("banger ended (%v) before the terminal went raw; output:\n%s", err, s.output())
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.t.Fatalf("terminal never went raw within %s; output:\n%s", within, s.output())
}

func (s *ptySession) expect(want string, within time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if strings.Contains(s.output(), want) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("no %q within %s; output:\n%s", want, within, s.output())
}

func (s *ptySession) typeText(text string) {
	s.t.Helper()
	if _, err := s.ptm.Write([]byte(text)); err != nil {
		s.t.Fatal(err)
	}
}

// exit waits for banger to end and returns its exit code.
func (s *ptySession) exit(within time.Duration) int {
	s.t.Helper()
	select {
	case err := <-s.done:
		if err == nil {
			return 0
		}
		ee, ok := err.(*exec.ExitError)
		if !ok {
			s.t.Fatalf("wait banger: %v", err)
		}
		return ee.ExitCode()
	case <-time.After(within):
		s.t.Fatalf("banger did not end within %s; output:\n%s", within, s.output())
		return -1
	}
}

// checkRestored fails unless the terminal's modes are exactly those it had
// before banger ran.
func (s *ptySession) checkRestored() {
	s.t.Helper()
	st, err := unix.IoctlGetTermios(int(s.pts.Fd()), unix.TCGETS)
	if err != nil {
		s.t.Fatal(err)
	}
	if st.Iflag != s.start.Iflag || st.Oflag != s.start.Oflag || st.Lflag != s.start.Lflag || st.Cflag != s.start.Cflag {
		s.t.Fatalf("terminal not restored: iflag %#x oflag %#x lflag %#x cflag %#x, was %#x %#x %#x %#x",
			st.Iflag, st.Oflag, st.Lflag, st.Cflag, s.start.Iflag, s.start.Oflag, s.start.Lflag, s.start.Cflag)
	}
}

// A login shell through the agent, and vm run -it --rm, driven through a real
// pty: what is typed runs in the guest, the shell's exit code is banger's,
// and the terminal is restored.
func TestShellAndRunInteractive(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	in.ok("banger", "vm", "create", "--start", "--name", "sh1", "--memory", "512M")

	s := startPTY(t, in, "vm", "shell", "sh1")
	s.waitRaw(60 * time.Second)
	s.typeText("echo hi-$((1+1)) $HOME $(tty)\n")
	s.expect("hi-2 /root /dev/pts/", 60*time.Second)
	s.typeText("exit 7\n")
	if code := s.exit(60 * time.Second); code != 7 {
		t.Fatalf("vm shell exit code %d, want 7 (the shell's); output:\n%s", code, s.output())
	}
	s.checkRestored()

	// The same through ssh (banger's key, the host key pinned on first use).
	ss := startPTY(t, in, "vm", "shell", "--ssh", "sh1")
	ss.expect("trusted the host key", 60*time.Second)
	ss.waitRaw(60 * time.Second)
	ss.typeText("echo ssh-$((2+2)) $SSH_CONNECTION\n")
	ss.expect("ssh-4 10.", 60*time.Second)
	ss.typeText("exit 5\n")
	if code := ss.exit(60 * time.Second); code != 5 {
		t.Fatalf("vm shell --ssh exit code %d, want 5; output:\n%s", code, ss.output())
	}
	ss.checkRestored()

	// vm run -it --rm -- bash: a fresh VM, a terminal, removed afterwards.
	r := startPTY(t, in, "vm", "run", "-it", "--rm", "--name", "run1", "--memory", "512M", "--", "bash")
	r.waitRaw(5 * time.Minute)
	r.typeText("echo hi-$((1+1))\n")
	r.expect("hi-2", 60*time.Second)
	r.typeText("exit\n")
	if code := r.exit(3 * time.Minute); code != 0 {
		t.Fatalf("vm run -it exit code %d, want 0; output:\n%s", code, r.output())
	}
	r.checkRestored()
	if out, _, _ := in.run("banger", "vm", "ls"); strings.Contains(out, "run1") {
		t.Fatalf("vm run --rm left run1 behind:\n%s", out)
	}
	r2 := startPTY(t, in, "vm", "run", "-it", "--rm", "--name", "run2", "--memory", "512M", "--", "bash")
	r2.waitRaw(5 * time.Minute)
	r2.typeText("exit 3\n")
	if code := r2.exit(3 * time.Minute); code != 3 {
		t.Fatalf("vm run -it exit code %d, want 3; output:\n%s", code, r2.output())
	}
	r2.checkRestored()
}
