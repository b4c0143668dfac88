// Package supervisor runs a system install of banger on hosts where systemd
// is not PID 1: the root helper and the owner daemon of the install layout,
// started as detached processes (own session, ready pipe) with pid files in
// <root>/run/banger. It is the second implementation of updater.Services,
// beside updater.SystemdServices.
//
// Stopping signals the recorded pid only, never a process group: the VMM
// processes the daemon started live in their own sessions and must outlive
// every restart.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/detach"
	"github.com/bangerdev/banger/internal/installmeta"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/updater"
)

// ErrNeedRoot reports an operation on the root helper by a caller that is
// not root.
var ErrNeedRoot = errors.New("starting or stopping the root helper needs root (sudo)")

// Defaults for Supervisor's timeouts.
const (
	DefaultStartTimeout = 20 * time.Second
	DefaultStopTimeout  = 20 * time.Second
	DefaultReadyTimeout = 30 * time.Second
)

// Supervisor starts and stops the two services of a system install.
type Supervisor struct {
	System paths.System
	Owner  installmeta.Meta // install.toml: owner and the helper's network
	// Bangerd is the program to run; "" means System.BangerdBin().
	Bangerd string
	// Env is added to every service's environment (after BANGER_HOME and
	// BANGER_SYSTEM_ROOT); tests use it.
	Env          []string
	StartTimeout time.Duration
	StopTimeout  time.Duration
	ReadyTimeout time.Duration
	Euid         func() int // nil means os.Geteuid
	Logger       *slog.Logger
}

var _ updater.Services = (*Supervisor)(nil)

// New returns a supervisor for the install described by install.toml under
// sys.
func New(sys paths.System, logger *slog.Logger) (*Supervisor, error) {
	meta, err := installmeta.Read(sys.InstallMeta())
	if err != nil {
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	return &Supervisor{System: sys, Owner: meta, Logger: logger}, nil
}

// RunDir holds the supervisor's pid files.
func (s *Supervisor) RunDir() string { return filepath.Join(s.System.Root, "run", "banger") }

// HelperPidFile and DaemonPidFile are the pid files of the two services.
func (s *Supervisor) HelperPidFile() string { return filepath.Join(s.RunDir(), "root-helper.pid") }
func (s *Supervisor) DaemonPidFile() string { return filepath.Join(s.RunDir(), "bangerd.pid") }

// Layout is the owner daemon's BANGER_HOME layout.
func (s *Supervisor) Layout() paths.User { return s.System.User() }

func (s *Supervisor) bangerd() string {
	if s.Bangerd != "" {
		return s.Bangerd
	}
	return s.System.BangerdBin()
}

func (s *Supervisor) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger.With("component", "supervisor")
}

func (s *Supervisor) euid() int {
	if s.Euid == nil {
		return os.Geteuid()
	}
	return s.Euid()
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// env is the services' environment: a minimal PATH, BANGER_HOME of the
// install layout, and BANGER_SYSTEM_ROOT when the install is not at "/"
// (as the systemd units set them).
func (s *Supervisor) env() []string {
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		paths.EnvHome + "=" + s.System.Home(),
	}
	if root := filepath.Clean(s.System.Root); root != "/" {
		env = append(env, paths.EnvSystemRoot+"="+root)
	}
	return append(env, s.Env...)
}

// HelperPID returns the pid of the running root helper, or 0.
func (s *Supervisor) HelperPID() int {
	pid := readPid(s.HelperPidFile())
	if pid > 0 && s.isOurs(pid, true) {
		return pid
	}
	return 0
}

// DaemonPID returns the pid of the running owner daemon, or 0. The daemon's
// own pid file (it writes one under its state lock) is consulted too, so a
// daemon started by someone else is found.
func (s *Supervisor) DaemonPID() int {
	for _, f := range []string{s.DaemonPidFile(), s.Layout().PidFile()} {
		if pid := readPid(f); pid > 0 && s.isOurs(pid, false) {
			return pid
		}
	}
	return 0
}

// isOurs checks that pid is a live bangerd in the expected role, so a stale
// pid file never leads to signalling a recycled pid.
func (s *Supervisor) isOurs(pid int, helper bool) bool {
	if !detach.Alive(pid) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return false
	}
	argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if filepath.Base(argv[0]) != filepath.Base(s.bangerd()) {
		return false
	}
	isHelper := false
	for _, a := range argv[1:] {
		if a == "--root-helper" {
			isHelper = true
		}
	}
	return isHelper == helper
}

// StartHelper starts the root helper unless it runs. Root only.
func (s *Supervisor) StartHelper(ctx context.Context) error {
	if s.euid() != 0 {
		return ErrNeedRoot
	}
	if pid := s.HelperPID(); pid > 0 {
		s.log().Info("root helper already running", "pid", pid)
		return nil
	}
	u := s.Layout()
	if err := s.ensureDirs(); err != nil {
		return fmt.Errorf("start root helper: %w", err)
	}
	args := []string{"--root-helper", "--owner-uid", strconv.Itoa(s.Owner.OwnerUID),
		"--socket", u.HelperSocket(), "--ready-fd", strconv.Itoa(detach.ReadyFD)}
	// The network install.toml records, as bangerd-root.service passes it.
	args = append(args, s.Owner.HelperNetworkArgs()...)
	proc, err := detach.Start(detach.Spec{Path: s.bangerd(), Args: args, Env: s.env(), LogPath: u.HelperLog()},
		orDefault(s.StartTimeout, DefaultStartTimeout))
	if err != nil {
		return fmt.Errorf("start root helper: %w", err)
	}
	if err := writePid(s.HelperPidFile(), proc.Pid); err != nil {
		return fmt.Errorf("start root helper: %w", err)
	}
	s.log().Info("root helper started", "pid", proc.Pid, "socket", u.HelperSocket())
	return nil
}

// StopHelper stops the root helper if it runs. Root only.
func (s *Supervisor) StopHelper(ctx context.Context) error {
	if s.euid() != 0 {
		return ErrNeedRoot
	}
	if err := s.stop(s.HelperPID(), "root helper"); err != nil {
		return err
	}
	return removeIfExists(s.HelperPidFile())
}

// RestartHelper stops the root helper (if it runs) and starts it again.
func (s *Supervisor) RestartHelper(ctx context.Context) error {
	if err := s.StopHelper(ctx); err != nil {
		return err
	}
	return s.StartHelper(ctx)
}

// StartDaemon starts the owner daemon unless it runs. As root it runs as the
// owner; the owner may start it as itself.
func (s *Supervisor) StartDaemon(ctx context.Context) error {
	euid := s.euid()
	if euid != 0 && euid != s.Owner.OwnerUID {
		return fmt.Errorf("start daemon: uid %d is neither root nor the install's owner %s", euid, s.Owner.OwnerUser)
	}
	if pid := s.DaemonPID(); pid > 0 {
		s.log().Info("daemon already running", "pid", pid)
		return nil
	}
	u := s.Layout()
	if euid == 0 {
		if err := s.ensureDirs(); err != nil {
			return fmt.Errorf("start daemon: %w", err)
		}
	}
	spec := detach.Spec{
		Path: s.bangerd(), Args: []string{"--ready-fd", strconv.Itoa(detach.ReadyFD)},
		Env: append(s.env(), "HOME="+s.Owner.OwnerHome, "USER="+s.Owner.OwnerUser), LogPath: u.DaemonLog(),
	}
	if euid == 0 {
		spec.Cred = &syscall.Credential{Uid: uint32(s.Owner.OwnerUID), Gid: uint32(s.Owner.OwnerGID)}
		// The log is opened by us, root; make it the owner's, as if the
		// daemon had created it.
		if err := ownedFile(u.DaemonLog(), s.Owner.OwnerUID, s.Owner.OwnerGID); err != nil {
			return fmt.Errorf("start daemon: %w", err)
		}
	}
	proc, err := detach.Start(spec, orDefault(s.StartTimeout, DefaultStartTimeout))
	if err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	if euid == 0 {
		if err := writePid(s.DaemonPidFile(), proc.Pid); err != nil {
			return fmt.Errorf("start daemon: %w", err)
		}
	}
	s.log().Info("daemon started", "pid", proc.Pid, "socket", u.Socket())
	return nil
}

// StopDaemon stops the owner daemon if it runs. Its VMs keep running.
func (s *Supervisor) StopDaemon(ctx context.Context) error {
	if err := s.stop(s.DaemonPID(), "daemon"); err != nil {
		return err
	}
	if s.euid() == 0 {
		return removeIfExists(s.DaemonPidFile())
	}
	return nil
}

// RestartDaemon stops the owner daemon (if it runs) and starts it again.
func (s *Supervisor) RestartDaemon(ctx context.Context) error {
	if err := s.StopDaemon(ctx); err != nil {
		return err
	}
	return s.StartDaemon(ctx)
}

// Start starts the helper (as root) and then the daemon: the order systemd
// follows (bangerd.service is After= bangerd-root.service).
func (s *Supervisor) Start(ctx context.Context) error {
	if s.euid() == 0 {
		// An update killed between swaps is completed or reverted before
		// the services start on a mix of two versions' binaries.
		if _, err := updater.Recover(ctx, updater.Options{System: s.System}, updater.Deps{
			Services: s, Doctor: updater.InstalledDoctor(s.System.BangerBin(), nil), Euid: s.euid, Logger: s.log(),
		}); err != nil {
			return fmt.Errorf("start: %w", err)
		}
		if err := s.StartHelper(ctx); err != nil {
			return err
		}
	}
	if err := s.StartDaemon(ctx); err != nil {
		return err
	}
	return s.WaitDaemonReady(ctx)
}

// Stop stops the daemon, then the helper; errors are joined.
func (s *Supervisor) Stop(ctx context.Context) error {
	errs := []error{s.StopDaemon(ctx)}
	if s.euid() == 0 {
		errs = append(errs, s.StopHelper(ctx))
	}
	return errors.Join(errs...)
}

// WaitDaemonReady returns once daemon.status answers on the install's
// socket; it fails at once when no daemon process is left to wait for.
func (s *Supervisor) WaitDaemonReady(ctx context.Context) error {
	timeout := orDefault(s.ReadyTimeout, DefaultReadyTimeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sock := s.Layout().Socket()
	client := rpc.NewClient(sock)
	var last error
	for {
		var st api.DaemonStatus
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		last = client.Call(cctx, api.MethodDaemonStatus, nil, &st)
		ccancel()
		if last == nil {
			return nil
		}
		if s.DaemonPID() == 0 {
			return fmt.Errorf("wait for daemon: no daemon process is running (%w); last log lines:\n%s", last, detach.Tail(s.Layout().DaemonLog(), 10))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for daemon on %s: not ready after %s: %w", sock, timeout, errors.Join(last, ctx.Err()))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM to pid alone and waits for it to exit (pidfd), then
// SIGKILL to that pid if it outlived the stop timeout.
func (s *Supervisor) stop(pid int, what string) error {
	if pid <= 0 {
		return nil
	}
	timeout := orDefault(s.StopTimeout, DefaultStopTimeout)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("stop %s (pid %d): %w", what, pid, err)
	}
	if detach.WaitExit(pid, timeout) {
		s.log().Info(what+" stopped", "pid", pid)
		return nil
	}
	s.log().Warn(what+" ignored SIGTERM; killing it", "pid", pid, "after", timeout)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s (pid %d): %w", what, pid, err)
	}
	if !detach.WaitExit(pid, 5*time.Second) {
		return fmt.Errorf("stop %s: pid %d still running after SIGKILL", what, pid)
	}
	return nil
}

// ensureDirs creates the run directory and the owner's state layout (the
// helper puts its socket in the owner's runtime dir, the logs go to its log
// dir), owned by the owner as sysinstall made them.
func (s *Supervisor) ensureDirs() error {
	if err := os.MkdirAll(s.RunDir(), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", s.RunDir(), err)
	}
	// /var/lib/banger stays root's and traversable, as sysinstall made it.
	if err := os.MkdirAll(filepath.Dir(s.System.Home()), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(s.System.Home()), err)
	}
	u := s.Layout()
	for _, d := range []string{s.System.Home(), u.State, u.Runtime, u.LogDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
		if err := os.Lchown(d, s.Owner.OwnerUID, s.Owner.OwnerGID); err != nil {
			return fmt.Errorf("give %s to %s: %w", d, s.Owner.OwnerUser, err)
		}
	}
	return nil
}

func ownedFile(path string, uid, gid int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Chown(uid, gid); err != nil {
		return fmt.Errorf("give %s to uid %d: %w", path, uid, err)
	}
	return nil
}

func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

func writePid(path string, pid int) error {
	if err := os.WriteFile(path, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	return nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove pid file: %w", err)
	}
	return nil
}
