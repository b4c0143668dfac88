package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/bangerdev/banger/internal/installmeta"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/supervisor"
	"github.com/bangerdev/banger/internal/sysinstall"
)

// systemInstall returns the system install this CLI call belongs to: one
// exists (install.toml under BANGER_SYSTEM_ROOT), the caller is root or its
// owner, and BANGER_HOME does not point at another (development) instance.
// ok is false otherwise; err reports an unreadable install.toml.
func (a *app) systemInstall() (sys paths.System, meta installmeta.Meta, ok bool, err error) {
	sys = paths.SystemFromEnv(a.env.Getenv)
	meta, err = installmeta.Read(sys.InstallMeta())
	if errors.Is(err, installmeta.ErrNotInstalled) {
		return sys, meta, false, nil
	}
	if err != nil {
		return sys, meta, false, err
	}
	if h := a.env.Getenv(paths.EnvHome); h != "" {
		if abs, aerr := filepath.Abs(h); aerr != nil || abs != filepath.Clean(sys.Home()) {
			return sys, meta, false, nil
		}
	}
	if euid := os.Geteuid(); euid != 0 && euid != meta.OwnerUID {
		return sys, meta, false, nil
	}
	return sys, meta, true, nil
}

// systemPaths is the layout the CLI talks to: the system install's owner
// daemon when systemInstall applies, else the caller's own (BANGER_HOME or
// XDG). app.paths can delegate here to make every command follow a system
// install without BANGER_HOME.
func (a *app) systemPaths() (paths.User, bool) {
	sys, _, ok, err := a.systemInstall()
	if err != nil || !ok {
		return paths.User{}, false
	}
	return sys.User(), true
}

// newSupervisor returns the supervisor of the system install under sys.
func (a *app) newSupervisor(sys paths.System, meta installmeta.Meta) *supervisor.Supervisor {
	return &supervisor.Supervisor{System: sys, Owner: meta, Logger: a.log}
}

// startSystemDaemon is `banger daemon start` under a system install: it
// ensures the root helper (as root) and the owner daemon run through the
// supervisor, or names the systemctl command when systemd runs the host.
// handled is false when no system install applies, and daemon start then
// starts a per-user daemon as usual. Call it first in daemon start's RunE:
//
//	if handled, err := a.startSystemDaemon(cmd.Context(), cmd.OutOrStdout()); handled { return err }
func (a *app) startSystemDaemon(ctx context.Context, w io.Writer) (handled bool, err error) {
	sys, meta, ok, err := a.systemInstall()
	if err != nil {
		return true, fmt.Errorf("read the system install: %w", err)
	}
	if !ok {
		return false, nil
	}
	if sysinstall.SystemdRunning() {
		sup := a.newSupervisor(sys, meta)
		if pid := sup.DaemonPID(); pid > 0 {
			fmt.Fprintf(w, "daemon already running (pid %d, %s)\n", pid, sys.User().Socket())
			return true, nil
		}
		return true, errors.New("banger is installed system-wide and systemd runs this host: start it with `sudo systemctl start bangerd-root.service bangerd.service`")
	}
	return true, a.superviseStart(ctx, w, sys, meta)
}

// superviseStart starts (or finds) the install's services and says which.
func (a *app) superviseStart(ctx context.Context, w io.Writer, sys paths.System, meta installmeta.Meta) error {
	sup := a.newSupervisor(sys, meta)
	hadHelper, hadDaemon := sup.HelperPID(), sup.DaemonPID()
	if os.Geteuid() != 0 && hadHelper == 0 {
		fmt.Fprintln(w, "warning: the root helper is not running; privileged operations will fail until `sudo banger daemon start`")
	}
	if err := sup.Start(ctx); err != nil {
		return fmt.Errorf("start the system install's services: %w", err)
	}
	report := func(what string, before, now int) {
		switch {
		case now == 0:
		case before == now:
			fmt.Fprintf(w, "%s already running (pid %d)\n", what, now)
		default:
			fmt.Fprintf(w, "%s started (pid %d)\n", what, now)
		}
	}
	report("root helper", hadHelper, sup.HelperPID())
	report("daemon", hadDaemon, sup.DaemonPID())
	fmt.Fprintf(w, "daemon socket: %s\n", sys.User().Socket())
	return nil
}
