// Package detach starts long-lived processes (the daemon, the root helper)
// in their own session, so they outlive whoever started them, and waits for
// them to say they are ready through a pipe: an event, never a sleep.
package detach

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ReadyFD is the descriptor number the child sees its ready pipe on
// (ExtraFiles[0]); the child writes "ready\n" to it once it serves.
const ReadyFD = 3

// Spec describes a process to start detached.
type Spec struct {
	Path    string
	Args    []string // without argv[0]
	Env     []string // nil: inherit
	LogPath string   // stdout and stderr are appended here
	Cred    *syscall.Credential
}

// Start launches spec in a new session with stdin on /dev/null and its output
// appended to LogPath, then waits up to timeout for it to write "ready" on
// fd 3. If the child exits or closes the pipe first, the error carries the
// last lines of its log.
func Start(spec Spec, timeout time.Duration) (*os.Process, error) {
	logf, err := os.OpenFile(spec.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", spec.LogPath, err)
	}
	defer logf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create ready pipe: %w", err)
	}
	defer pr.Close()
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Env = spec.Env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{pw}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: spec.Cred}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return nil, fmt.Errorf("start %s: %w", spec.Path, err)
	}
	pw.Close()
	proc := cmd.Process
	// Reap the child if it dies while we still live; a detached child that
	// outlives us is reparented and reaped by init.
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(pr).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case l := <-line:
		if l == "ready" {
			return proc, nil
		}
		werr := waitBriefly(exited)
		return nil, fmt.Errorf("%s exited before it was ready (%v); last log lines:\n%s", spec.Path, werr, Tail(spec.LogPath, 15))
	case <-timer.C:
		_ = proc.Kill()
		return nil, fmt.Errorf("%s not ready after %s; last log lines:\n%s", spec.Path, timeout, Tail(spec.LogPath, 15))
	}
}

func waitBriefly(exited <-chan error) error {
	select {
	case err := <-exited:
		if err == nil {
			return errors.New("exit status 0")
		}
		return err
	case <-time.After(2 * time.Second):
		return errors.New("closed its ready pipe")
	}
}

// SignalReady is the child's side: write "ready" to fd and close it. A zero
// or negative fd means nobody waits.
func SignalReady(fd int) {
	if fd <= 0 {
		return
	}
	f := os.NewFile(uintptr(fd), "ready")
	if f == nil {
		return
	}
	_, _ = io.WriteString(f, "ready\n")
	_ = f.Close()
}

// WaitExit waits up to timeout for pid to exit, using a pidfd (an event, not
// polling). It reports whether the process is gone.
func WaitExit(pid int, timeout time.Duration) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return errors.Is(err, unix.ESRCH)
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(timeout)
	for {
		ms := int(time.Until(deadline) / time.Millisecond)
		if ms <= 0 {
			return false
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, ms)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0
	}
}

// Alive reports whether pid names a live (non-zombie) process.
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// Tail returns the last n lines of a file, for error messages.
func Tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	const max = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > max {
		_, _ = f.Seek(st.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// ReadPid returns the pid recorded in a pid file, or 0.
func ReadPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}
