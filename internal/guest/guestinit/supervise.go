package guestinit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// reaper is PID 1's only waiter: it reaps every exited child (orphans
// included) with wait4(-1) and hands the status of children it started to
// whoever started them. Nothing else in PID 1 may wait for a child, which is
// why the agent server runs as its own process: its exec'd commands are its
// children, not ours.
type reaper struct {
	mu      sync.Mutex
	waiting map[int]chan unix.WaitStatus
}

func newReaper() *reaper { return &reaper{waiting: map[int]chan unix.WaitStatus{}} }

// start starts cmd and returns a channel that receives its exit status. The
// lock makes registration atomic with respect to reaping, so a child that
// exits at once is not lost.
func (r *reaper) start(cmd *exec.Cmd) (<-chan unix.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan unix.WaitStatus, 1)
	r.waiting[cmd.Process.Pid] = ch
	return ch, nil
}

// run starts cmd and waits for it, killing it when ctx ends.
func (r *reaper) run(ctx context.Context, cmd *exec.Cmd) error {
	ch, err := r.start(cmd)
	if err != nil {
		return err
	}
	select {
	case ws := <-ch:
		return exitError(ws)
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-ch
		return ctx.Err()
	}
}

// reap collects every exited child; call it on SIGCHLD.
func (r *reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for range 10000 { // bounded: far more zombies than a microVM makes
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if ch, ok := r.waiting[pid]; ok {
			ch <- ws
			delete(r.waiting, pid)
		}
	}
}

func exitError(ws unix.WaitStatus) error {
	switch {
	case ws.Exited() && ws.ExitStatus() == 0:
		return nil
	case ws.Exited():
		return fmt.Errorf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Errorf("killed by %v", ws.Signal())
	default:
		return fmt.Errorf("wait status %#x", uint32(ws))
	}
}

// supervisor keeps one long-running child alive, restarting it with a
// bounded exponential backoff, until stop.
type supervisor struct {
	name   string
	newCmd func() *exec.Cmd
	reaper *reaper
	log    *slog.Logger

	mu      sync.Mutex
	cmd     *exec.Cmd
	stopped bool
	done    chan struct{}
}

const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
	// healthyRun resets the backoff: a child that ran this long was fine.
	healthyRun = 10 * time.Second
)

// startSupervisor starts the child once (failing if that fails) and keeps it
// running in the background.
func startSupervisor(name string, r *reaper, log *slog.Logger, newCmd func() *exec.Cmd) (*supervisor, error) {
	s := &supervisor{name: name, newCmd: newCmd, reaper: r, log: log, done: make(chan struct{})}
	ch, err := s.launch()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go s.loop(ch)
	return s, nil
}

func (s *supervisor) launch() (<-chan unix.WaitStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, errors.New("stopped")
	}
	cmd := s.newCmd()
	ch, err := s.reaper.start(cmd)
	if err != nil {
		return nil, err
	}
	s.cmd = cmd
	return ch, nil
}

func (s *supervisor) loop(ch <-chan unix.WaitStatus) {
	defer close(s.done)
	backoff := minBackoff
	started := time.Now()
	for {
		ws := <-ch
		s.mu.Lock()
		stopped := s.stopped
		s.mu.Unlock()
		if stopped {
			return
		}
		if time.Since(started) > healthyRun {
			backoff = minBackoff
		}
		s.log.Warn("child exited, restarting", "child", s.name, "status", exitError(ws), "after", backoff)
		time.Sleep(backoff)
		backoff = min(backoff*2, maxBackoff)
		for {
			var err error
			started = time.Now()
			if ch, err = s.launch(); err == nil {
				break
			}
			s.mu.Lock()
			stopped := s.stopped
			s.mu.Unlock()
			if stopped {
				return
			}
			s.log.Error("restart failed", "child", s.name, "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			backoff = min(backoff*2, maxBackoff)
		}
	}
}

// stop sends SIGTERM, then SIGKILL after grace, and waits for the child.
func (s *supervisor) stop(grace time.Duration) {
	s.mu.Lock()
	s.stopped = true
	cmd := s.cmd
	s.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-s.done:
	case <-time.After(grace):
		if cmd != nil && cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
		select {
		case <-s.done:
		case <-time.After(time.Second):
		}
	}
}
