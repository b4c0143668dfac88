package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/detach"
	"github.com/bangerdev/banger/internal/rpc"
)

// EnvDaemonBin overrides where the CLI finds bangerd.
const EnvDaemonBin = "BANGER_DAEMON_BIN"

// daemonTimeout bounds how long start waits for the daemon to be ready.
const daemonTimeout = 20 * time.Second

// client returns a daemon client, starting the daemon first (and saying so
// on stderr) when it is not running.
func (a *app) client(ctx context.Context) (*rpc.Client, error) {
	p, err := a.paths()
	if err != nil {
		return nil, err
	}
	c := rpc.NewClient(p.Socket())
	if _, err := rpc.Invoke(ctx, c, api.MethodDaemonPing, api.Empty{}); err == nil {
		return c, nil
	} else if !errors.Is(err, rpc.ErrNotRunning) {
		// Possibly a daemon still exiting: wait for it, then start anew.
		pid := detach.ReadPid(p.PidFile())
		if pid <= 0 || !detach.WaitExit(pid, 10*time.Second) {
			return nil, err
		}
	}
	pid, err := a.startDaemon(ctx)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(a.env.Stderr, "banger: daemon was not running; started it (pid %d)\n", pid)
	return c, nil
}

// bangerdPath finds bangerd: $BANGER_DAEMON_BIN, beside this binary, or PATH.
func (a *app) bangerdPath() (string, error) {
	if p := a.env.Getenv(EnvDaemonBin); p != "" {
		return p, nil
	}
	if a.env.Executable != "" {
		cand := filepath.Join(filepath.Dir(a.env.Executable), "bangerd")
		if _, err := os.Stat(cand); err == nil {
			return cand, nil
		}
	}
	p, err := exec.LookPath("bangerd")
	if err != nil {
		return "", fmt.Errorf("find bangerd: not beside %s nor on PATH (install banger, or set %s)", a.env.Executable, EnvDaemonBin)
	}
	return p, nil
}

// startDaemon spawns bangerd in its own session and waits until it serves.
func (a *app) startDaemon(ctx context.Context) (int, error) {
	// Under a system install the services run the daemon, never this CLI.
	if handled, err := a.startSystemDaemon(ctx, a.env.Stderr); handled {
		if err != nil {
			return 0, err
		}
		p, _ := a.paths()
		return detach.ReadPid(p.PidFile()), nil
	}
	p, err := a.paths()
	if err != nil {
		return 0, err
	}
	if err := p.Ensure(); err != nil {
		return 0, err
	}
	bin, err := a.bangerdPath()
	if err != nil {
		return 0, err
	}
	args := []string{"--ready-fd", fmt.Sprint(detach.ReadyFD)}
	if a.debug {
		args = append(args, "--debug")
	}
	env := os.Environ()
	if h := a.env.Getenv("BANGER_HOME"); h != "" {
		abs, _ := filepath.Abs(h)
		env = append(env, "BANGER_HOME="+abs)
	}
	logf, err := detach.OpenLog(p.DaemonLog())
	if err != nil {
		return 0, fmt.Errorf("start daemon: %w", err)
	}
	defer logf.Close()
	child, err := detach.Start(detach.Spec{Path: bin, Args: args, Env: env, Log: logf}, daemonTimeout)
	if err != nil {
		return 0, fmt.Errorf("start daemon: %w", err)
	}
	return child.Pid, nil
}
