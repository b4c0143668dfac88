package updater

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// Unit names of a system install (rendered by internal/sysinstall).
const (
	DaemonUnit = "bangerd.service"
	HelperUnit = "bangerd-root.service"
)

// Services restarts banger's two processes after a swap. There are two
// implementations: SystemdServices (systemctl) for a systemd host, and the
// supervisor behind `banger daemon start` for hosts without systemd.
type Services interface {
	RestartHelper(ctx context.Context) error
	RestartDaemon(ctx context.Context) error
	// WaitDaemonReady returns once the restarted daemon serves requests, or
	// an error when it does not within the implementation's deadline.
	WaitDaemonReady(ctx context.Context) error
}

// CommandRunner runs a program and returns its combined output. A non-zero
// exit is an error (an *exec.ExitError, possibly wrapped).
type CommandRunner func(ctx context.Context, name string, args ...string) ([]byte, error)

// ExecRunner runs commands with os/exec, inheriting the environment.
func ExecRunner(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(out.String())
		if len(msg) > 2000 {
			msg = msg[len(msg)-2000:]
		}
		if msg != "" {
			return out.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
		}
		return out.Bytes(), fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return out.Bytes(), nil
}

// SystemdServices restarts the units with systemctl. Readiness is Probe
// (normally: the daemon answers a ping on its socket) when set, else
// `systemctl is-active` reporting "active"; a unit that systemd reports as
// "failed" ends the wait at once.
type SystemdServices struct {
	Run          CommandRunner               // nil: ExecRunner
	Probe        func(context.Context) error // nil: is-active only
	ReadyTimeout time.Duration               // 0: 30 s
	PollInterval time.Duration               // 0: 200 ms
}

var _ Services = SystemdServices{}

func (s SystemdServices) run(ctx context.Context, args ...string) ([]byte, error) {
	run := s.Run
	if run == nil {
		run = ExecRunner
	}
	return run(ctx, "systemctl", args...)
}

// RestartHelper restarts bangerd-root.service. Its KillMode=process and
// SendSIGKILL=no leave the VMM children running.
func (s SystemdServices) RestartHelper(ctx context.Context) error {
	return s.restart(ctx, HelperUnit)
}

// RestartDaemon restarts bangerd.service.
func (s SystemdServices) RestartDaemon(ctx context.Context) error {
	return s.restart(ctx, DaemonUnit)
}

// restart clears the unit's failed state first: a daemon that failed in a
// loop (Restart=on-failure) hits its start limit, and systemd then refuses
// every start, the rollback's included, until reset-failed.
func (s SystemdServices) restart(ctx context.Context, unit string) error {
	if _, err := s.run(ctx, "reset-failed", unit); err != nil {
		return fmt.Errorf("restart %s: clear its failed state: %w", unit, err)
	}
	if _, err := s.run(ctx, "restart", unit); err != nil {
		return fmt.Errorf("restart %s: %w", unit, err)
	}
	return nil
}

// journalTail is the daemon unit's last log lines, for an error saying why
// it failed (the supervisor's error carries its log tail the same way);
// empty when the journal cannot be read.
func (s SystemdServices) journalTail(ctx context.Context) string {
	run := s.Run
	if run == nil {
		run = ExecRunner
	}
	out, err := run(ctx, "journalctl", "--no-pager", "--output", "cat", "--lines", "10", "--unit", DaemonUnit)
	if tail := strings.TrimSpace(string(out)); err == nil && tail != "" {
		return "; its last log lines:\n" + tail
	}
	return ""
}

// WaitDaemonReady polls until the daemon unit is active and Probe passes.
func (s SystemdServices) WaitDaemonReady(ctx context.Context) error {
	timeout, interval := s.ReadyTimeout, s.PollInterval
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		out, _ := s.run(ctx, "is-active", DaemonUnit)
		state := strings.TrimSpace(string(out))
		switch state {
		case "failed":
			return fmt.Errorf("wait for %s: the unit failed%s", DaemonUnit, s.journalTail(ctx))
		case "active":
			if s.Probe == nil {
				return nil
			}
			if last = s.Probe(ctx); last == nil {
				return nil
			}
		default:
			last = fmt.Errorf("unit is %q", state)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: not ready after %s: %w", DaemonUnit, timeout, errors.Join(last, ctx.Err()))
		case <-time.After(interval):
		}
	}
}
