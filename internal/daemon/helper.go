package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/detach"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/roothelper"
	"github.com/bangerdev/banger/internal/system"
)

// ensureHelper finds a running root helper (as under systemd) or, when the
// daemon runs as root (development mode on a root machine), spawns one as its
// own process. A daemon that is neither keeps running; operations that need
// privileges then fail with a hint.
func (d *Daemon) ensureHelper(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if id, err := d.helper.Identity(cctx); err == nil {
		d.log.Info("using running root helper", "pid", id.PID, "version", id.Build.Version, "managed", id.Managed)
		if id.Managed {
			// A helper a previous daemon of this state directory spawned (it
			// died without stopping it): this daemon owns it now.
			d.setHelperPID(id.PID)
		}
		return
	}
	if os.Geteuid() != 0 || d.opts.Executable == "" {
		d.log.Warn("root helper not running; privileged operations will fail", "socket", d.helper.Socket())
		return
	}
	args := []string{"--managed",
		"--owner-uid", strconv.Itoa(os.Getuid()),
		"--socket", d.paths.HelperSocket(),
		"--ready-fd", strconv.Itoa(detach.ReadyFD),
		"--subnet", d.cfg.Network.Subnet, "--bridge", d.cfg.Network.Bridge}
	// This daemon is root: its config.toml is root's, so its [firecracker]
	// settings may tell the helper which jailer to run.
	fc := d.cfg.Firecracker.WithDefaults()
	args = append(args, "--firecracker-binary", fc.FirecrackerBinary, "--jailer-binary", fc.JailerBinary,
		"--jailer-uid-start", strconv.Itoa(fc.UIDStart), "--jailer-uid-count", strconv.Itoa(fc.UIDCount),
		"--jailer-cgroup-version", fc.CgroupVersion, "--jailer-chroot-base", fc.ChrootBase)
	if d.opts.Debug {
		args = append(args, "--debug")
	}
	// This daemon is root and the state directory is its own (owner ==
	// root), so its paths are trusted here.
	logf, err := detach.OpenLog(d.paths.HelperLog())
	if err != nil {
		d.log.Error("start root helper", "err", err)
		return
	}
	defer logf.Close()
	child, err := detach.Start(detach.Spec{Path: helperBin(d.opts.Executable), Args: args, Log: logf}, 10*time.Second)
	if err != nil {
		d.log.Error("start root helper", "err", err)
		return
	}
	d.setHelperPID(child.Pid)
	if err := system.WriteFileAtomic(d.paths.HelperPidFile(), []byte(strconv.Itoa(child.Pid)+"\n"), 0o600); err != nil {
		d.log.Warn("record root helper pid", "err", err)
	}
	d.log.Info("started root helper", "pid", child.Pid, "socket", d.paths.HelperSocket())
}

// stopManagedHelper stops a helper this daemon spawned; a helper run by the
// service manager is left alone.
func (d *Daemon) stopManagedHelper() {
	d.helperMu.Lock()
	d.helperDone = true
	pid := d.helperPID
	d.helperMu.Unlock()
	if pid == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := d.helper.Shutdown(ctx); err != nil {
		d.log.Warn("stop root helper", "err", err)
		_ = syscallKill(pid)
	}
	detach.WaitExit(pid, 3*time.Second)
	_ = os.Remove(d.paths.HelperPidFile())
}

func (d *Daemon) setHelperPID(pid int) {
	d.helperMu.Lock()
	defer d.helperMu.Unlock()
	d.helperPID = pid
}

// helperRestarts bounds how often superviseHelper restarts a helper that
// keeps dying: at most this many within helperRestartWindow.
const (
	helperRestarts      = 5
	helperRestartWindow = time.Minute
)

// superviseHelper restarts a helper this daemon spawned when it dies (a
// crash, a SIGKILL): without it every privileged operation would fail
// until the daemon restarts. A helper the service manager runs is its
// business (Restart= in its unit). The new helper re-creates the bridge
// and tables on the next network call; what the dead one half-made is
// undone by the operation that asked for it, or reconciled then.
func (d *Daemon) superviseHelper(ctx context.Context) {
	var recent []time.Time
	for {
		d.helperMu.Lock()
		pid := d.helperPID
		d.helperMu.Unlock()
		if pid == 0 {
			return
		}
		waitPidExit(ctx, pid)
		d.helperMu.Lock()
		done := d.helperDone
		d.helperMu.Unlock()
		if ctx.Err() != nil || done {
			return
		}
		now := time.Now()
		recent = append(recent, now)
		for len(recent) > 0 && now.Sub(recent[0]) > helperRestartWindow {
			recent = recent[1:]
		}
		if len(recent) > helperRestarts {
			d.log.Error("root helper keeps exiting; not restarting it again (banger daemon stop; banger daemon start)", "pid", pid, "restarts", helperRestarts, "window", helperRestartWindow)
			return
		}
		d.log.Warn("root helper exited; starting it again", "pid", pid)
		d.setHelperPID(0)
		d.ensureHelper(ctx)
	}
}

// waitPidExit blocks until pid exits or ctx ends, on a pidfd (an event).
func waitPidExit(ctx context.Context, pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // already gone
	}
	defer unix.Close(fd)
	for ctx.Err() == nil {
		if n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 500); err == nil && n > 0 {
			return
		}
	}
}

// helperStatusTimeout bounds daemon status's look at the helper. It is the
// helper's own request deadline: a helper busy with a daemon under load
// (100 clients) answered later than the 2 s this once was, and status
// called it unreachable.
const helperStatusTimeout = 5 * time.Second

func (d *Daemon) helperStatus(ctx context.Context) api.HelperStatus {
	hs := api.HelperStatus{Socket: d.helper.Socket()}
	cctx, cancel := context.WithTimeout(ctx, helperStatusTimeout)
	defer cancel()
	// One call: an identity answer proves the helper is up and admits us.
	id, err := d.helper.Identity(cctx)
	if err != nil {
		hs.Error = fmt.Sprintf("%v (start it with `sudo banger system install`, or run bangerd as root in development)", err)
		return hs
	}
	hs.Reachable, hs.PID, hs.Version, hs.Resources = true, id.PID, id.Build.Version, id.Resources
	return hs
}

func syscallKill(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}

// helperBin is banger-helper beside the daemon's executable (a build tree or
// an install's bin directory), else the system install's.
func helperBin(executable string) string {
	p := filepath.Join(filepath.Dir(executable), "banger-helper")
	if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
		return p
	}
	return paths.SystemFromEnv(os.Getenv).HelperBin()
}

// helperCgroups adopts VMMs into their own cgroups through the root helper.
type helperCgroups struct{ c *roothelper.Client }

func (h helperCgroups) AdoptVMM(ctx context.Context, vmID string, pid int, startTime uint64) error {
	_, err := h.c.AdoptVMM(ctx, vmID, pid, startTime)
	return err
}
