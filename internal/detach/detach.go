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
	Path string
	Args []string // without argv[0]
	Env  []string // nil: inherit
	// Log receives stdout and stderr. The caller opens it (O_APPEND), so a
	// privileged caller resolves it safely (see system.OpenAppendAt) and
	// Start never looks a path up; opened O_RDWR, its tail is read back
	// through the same descriptor for errors.
	Log  *os.File
	Cred *syscall.Credential
}

// Child is a started, ready process.
type Child struct {
	Pid int
	// StartTime is the process's start time in clock ticks since boot
	// (/proc/PID/stat field 22): with Pid it names the process, where a
	// pid alone may have been recycled.
	StartTime uint64
}

// OpenLog opens (creating 0600) a log file in a directory the caller
// itself owns, readable for Start's error tails. Privileged callers must
// not use it on a path another user controls.
func OpenLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	return f, nil
}

// Start launches spec in a new session with stdin on /dev/null and its output
// appended to Log, then waits up to timeout for it to write "ready" on
// fd 3. If the child exits or closes the pipe first, the error carries the
// last lines of its log.
func Start(spec Spec, timeout time.Duration) (Child, error) {
	if spec.Log == nil {
		return Child{}, fmt.Errorf("start %s: no log descriptor", spec.Path)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return Child{}, fmt.Errorf("create ready pipe: %w", err)
	}
	defer pr.Close()
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Env = spec.Env
	cmd.Stdout, cmd.Stderr = spec.Log, spec.Log
	cmd.ExtraFiles = []*os.File{pw}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: spec.Cred}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return Child{}, fmt.Errorf("start %s: %w", spec.Path, err)
	}
	pw.Close()
	proc := cmd.Process
	// Read the start time while the child cannot have been reaped: it is
	// our unreaped child until cmd.Wait below returns.
	started, _ := StartTime(proc.Pid)
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
			return Child{Pid: proc.Pid, StartTime: started}, nil
		}
		werr := waitBriefly(exited)
		return Child{}, fmt.Errorf("%s exited before it was ready (%v); last log lines:\n%s", spec.Path, werr, TailFile(spec.Log, 15))
	case <-timer.C:
		_ = proc.Kill()
		return Child{}, fmt.Errorf("%s not ready after %s; last log lines:\n%s", spec.Path, timeout, TailFile(spec.Log, 15))
	}
}

// StartTime returns pid's start time (clock ticks since boot).
func StartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read start time of pid %d: %w", pid, err)
	}
	// The command name may hold spaces and parentheses: fields start
	// after the last ')'. starttime is field 22, the 20th after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("read start time of pid %d: malformed stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("read start time of pid %d: malformed stat", pid)
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read start time of pid %d: %w", pid, err)
	}
	return v, nil
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
	return WaitPidfd(fd, timeout)
}

// WaitPidfd waits up to timeout for the process behind a pidfd to exit.
func WaitPidfd(fd int, timeout time.Duration) bool {
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

// Tail returns the last n lines of a file, for error messages. It follows
// the path: privileged callers use TailFile on a descriptor they resolved.
func Tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	return TailFile(f, n)
}

// TailFile returns the last n lines of an open file (read with ReadAt, so
// an O_APPEND descriptor works and its offset does not matter).
func TailFile(f *os.File, n int) string {
	const max = 64 << 10
	st, err := f.Stat()
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	off := st.Size() - max
	if off < 0 {
		off = 0
	}
	b := make([]byte, st.Size()-off)
	k, err := f.ReadAt(b, off)
	if k == 0 && err != nil && err != io.EOF {
		return "(log not readable: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b[:k]), "\n"), "\n")
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
