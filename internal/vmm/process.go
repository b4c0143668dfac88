package vmm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Process is a VMM process this daemon started. The daemon stays its parent
// only while it lives: a goroutine reaps it so no zombie lingers, and after a
// daemon restart the process (reparented to init) is watched by pid and
// start time instead.
type Process struct {
	PID       int
	StartTime uint64
	exited    chan struct{}
	waitErr   error
}

// Exited is closed once the process has exited and been reaped.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// ExitErr is the exit status; valid after Exited is closed.
func (p *Process) ExitErr() error { return p.waitErr }

// Command is what StartDetached launches.
type Command struct {
	Path    string
	Args    []string // without argv[0]
	Env     []string // nil: inherit
	LogPath string   // stdout and stderr appended here; "" means /dev/null
	Cred    *syscall.Credential
	// ExtraFiles are inherited as descriptors 3, 4, …; the caller keeps
	// (and closes) its own copies.
	ExtraFiles []*os.File
	// UserNS, when set, starts the process in new user and mount
	// namespaces with these single-id maps (uid and gid 0 inside map to
	// them outside), so it holds no privilege beyond that uid's.
	UserNS *UserNS
}

// UserNS is the identity a process started in its own user namespace has
// outside it.
type UserNS struct{ UID, GID int }

// StartDetached launches cmd in its own session with stdin on /dev/null and
// output to its log, tied to no context: it outlives the request that
// started it and the daemon itself. (Not -daemonize: QEMU migration to a file
// failed under it here, and we would lose the pid.)
func StartDetached(cmd Command) (*Process, error) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer devnull.Close()
	out := devnull
	if cmd.LogPath != "" {
		out, err = os.OpenFile(cmd.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open vmm log %s: %w", cmd.LogPath, err)
		}
		defer out.Close()
	}
	c := exec.Command(cmd.Path, cmd.Args...)
	c.Env = cmd.Env
	c.Stdin, c.Stdout, c.Stderr = devnull, out, out
	c.ExtraFiles = cmd.ExtraFiles
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: cmd.Cred}
	if ns := cmd.UserNS; ns != nil {
		c.SysProcAttr.Cloneflags = syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS
		c.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: ns.UID, Size: 1}}
		c.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: ns.GID, Size: 1}}
	}
	if err := c.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	p := &Process{PID: c.Process.Pid, exited: make(chan struct{})}
	go func() {
		p.waitErr = c.Wait()
		close(p.exited)
	}()
	st, err := ProcStartTime(p.PID)
	if err != nil {
		// It died before we could look: it is reaped by the goroutine.
		<-p.exited
		return nil, fmt.Errorf("%s exited at once: %v", cmd.Path, p.waitErr)
	}
	p.StartTime = st
	return p, nil
}

// ProcStartTime reads field 22 (starttime, clock ticks since boot) of
// /proc/PID/stat. Together with the pid it names one process for good.
func ProcStartTime(pid int) (uint64, error) {
	_, start, err := procStat(pid)
	return start, err
}

func procStat(pid int) (state byte, start uint64, err error) {
	if pid <= 0 {
		return 0, 0, fmt.Errorf("invalid pid %d", pid)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: no command field", pid)
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(fields)+2)
	}
	start, err = strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat starttime: %w", pid, err)
	}
	return fields[0][0], start, nil
}

// ProcessAlive reports whether pid runs and is the process that started at
// startTime (a bare pid may have been reused); reason says why not.
func ProcessAlive(pid int, startTime uint64) (bool, string) {
	state, start, err := procStat(pid)
	switch {
	case err != nil:
		return false, fmt.Sprintf("process %d is gone", pid)
	case start != startTime:
		return false, fmt.Sprintf("pid %d was reused by another process (start time %d, recorded %d)", pid, start, startTime)
	case state == 'Z' || state == 'X':
		return false, fmt.Sprintf("process %d has exited", pid)
	}
	return true, ""
}

// openPidfd returns a pidfd for the process (pid, startTime), or
// ErrNotRunning. The start time is checked after opening, so the fd cannot
// refer to a process that reused the pid.
func openPidfd(pid int, startTime uint64) (int, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return -1, ErrNotRunning
		}
		return -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	// Identity only: a zombie leader may still have threads exiting that hold
	// its files (a tap, a socket), and the pidfd reports when they are gone.
	if _, start, err := procStat(pid); err != nil || start != startTime {
		unix.Close(fd)
		return -1, ErrNotRunning
	}
	return fd, nil
}

// SignalProcess sends sig to (pid, startTime) through a pidfd; a process
// that is already gone is not an error.
func SignalProcess(pid int, startTime uint64, sig unix.Signal) error {
	fd, err := openPidfd(pid, startTime)
	if errors.Is(err, ErrNotRunning) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal %v to process %d: %w", sig, pid, err)
	}
	return nil
}

// WaitGone waits, event-driven through a pidfd, until (pid, startTime) has
// exited, for at most timeout or until ctx ends. It does not reap: the
// parent (our reaper goroutine, or init for an adopted VM) does.
func WaitGone(ctx context.Context, pid int, startTime uint64, timeout time.Duration) error {
	fd, err := openPidfd(pid, startTime)
	if errors.Is(err, ErrNotRunning) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("process %d still running after %s", pid, timeout)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("wait for process %d: %w", pid, err)
		}
		// Wake at least every 250ms to notice ctx; the pidfd event ends the wait.
		ms := min(left, 250*time.Millisecond).Milliseconds() + 1
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(ms))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll pidfd of process %d: %w", pid, err)
		}
		if n > 0 {
			return nil
		}
	}
}

// KillAndWait sends SIGKILL and waits for the process to go.
func KillAndWait(ctx context.Context, pid int, startTime uint64, timeout time.Duration) error {
	if err := SignalProcess(pid, startTime, unix.SIGKILL); err != nil {
		return err
	}
	return WaitGone(ctx, pid, startTime, timeout)
}

// RemoveFiles removes paths, ignoring those already gone.
func RemoveFiles(paths ...string) error {
	var errs []error
	for _, p := range paths {
		if p == "" {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
