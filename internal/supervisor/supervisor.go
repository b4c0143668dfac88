// Package supervisor runs a system install of banger on hosts where systemd
// is not PID 1: the root helper and the owner daemon of the install layout,
// started as detached processes (own session, ready pipe) with pid files in
// the root-owned <root>/run/banger. It is the second implementation of
// updater.Services, beside updater.SystemdServices.
//
// Running as root, it never follows a path the owner controls: its pid
// files and the helper's log live in root-owned directories (System.RunDir,
// System.LogDir) opened from / without symlinks; the owner's state is
// reached only through descriptors (openat2 RESOLVE_BENEATH|NO_SYMLINKS)
// from the root-owned /var/lib/banger. A process is signalled only after
// its identity (pid + start time from a root-owned record, or uid and
// program) is checked through a pidfd, so a pid file cannot aim it.
//
// Stopping signals the recorded pid only, never a process group: the VMM
// processes the daemon started live in their own sessions and must outlive
// every restart.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/detach"
	"github.com/bangerdev/banger/internal/installmeta"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/system"
	"github.com/bangerdev/banger/internal/updater"
	"golang.org/x/sys/unix"
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
	// Bangerd is the owner daemon to run; "" means System.BangerdBin().
	Bangerd string
	// Helper is the root helper to run; "" means System.HelperBin().
	Helper string
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

// RunDir holds the supervisor's pid files (root-owned).
func (s *Supervisor) RunDir() string { return s.System.RunDir() }

// HelperPidFile and DaemonPidFile are the pid files of the two services.
func (s *Supervisor) HelperPidFile() string { return filepath.Join(s.RunDir(), helperPidName) }
func (s *Supervisor) DaemonPidFile() string { return filepath.Join(s.RunDir(), daemonPidName) }

const (
	helperPidName = "root-helper.pid"
	daemonPidName = "bangerd.pid"
)

// Layout is the owner daemon's BANGER_HOME layout.
func (s *Supervisor) Layout() paths.User { return s.System.User() }

func (s *Supervisor) bangerd() string {
	if s.Bangerd != "" {
		return s.Bangerd
	}
	return s.System.BangerdBin()
}

func (s *Supervisor) helper() string {
	if s.Helper != "" {
		return s.Helper
	}
	return s.System.HelperBin()
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

// HelperPID returns the pid of the running root helper, or 0. Only the
// root-owned record counts, and only if it still names the same process.
func (s *Supervisor) HelperPID() int {
	rec := s.readRecord(helperPidName)
	if rec.Pid > 0 && s.isOurs(rec, true) {
		return rec.Pid
	}
	return 0
}

// DaemonPID returns the pid of the running owner daemon, or 0. The daemon's
// own pid file (it writes one under its state lock) is consulted too, so a
// daemon started by the owner is found; that file is the owner's, so a pid
// from it is accepted only for a bangerd process running as the owner uid
// (one the owner could signal anyway).
func (s *Supervisor) DaemonPID() int {
	if rec := s.readRecord(daemonPidName); rec.Pid > 0 && s.isOurs(rec, false) {
		return rec.Pid
	}
	if rec := (pidRecord{Pid: s.readOwnerPid()}); rec.Pid > 0 && s.isOurs(rec, false) {
		return rec.Pid
	}
	return 0
}

// isOurs checks that rec names a live bangerd in the expected role and
// with the expected uid (root for the helper, the owner for the daemon).
// With a start time (every record this package writes), the start time
// must match too, so a recycled pid never qualifies.
func (s *Supervisor) isOurs(rec pidRecord, helper bool) bool {
	pid := rec.Pid
	if !detach.Alive(pid) {
		return false
	}
	if rec.StartTime != 0 {
		if st, err := detach.StartTime(pid); err != nil || st != rec.StartTime {
			return false
		}
	}
	wantUID := s.Owner.OwnerUID
	if helper {
		wantUID = 0
	}
	if ruid, euid, err := procUIDs(pid); err != nil || ruid != wantUID || euid != wantUID {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return false
	}
	argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	switch filepath.Base(argv[0]) {
	case filepath.Base(s.helper()):
		return helper
	case filepath.Base(s.bangerd()):
		// A helper started by the previous release runs as bangerd
		// --root-helper: still the helper, so a restart stops it.
		return slices.Contains(argv[1:], "--root-helper") == helper
	}
	return false
}

// procUIDs returns pid's real and effective uid.
func procUIDs(pid int) (int, int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1, -1, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "Uid:" {
			r, err1 := strconv.Atoi(f[1])
			e, err2 := strconv.Atoi(f[2])
			if err1 != nil || err2 != nil {
				return -1, -1, fmt.Errorf("parse uids of pid %d", pid)
			}
			return r, e, nil
		}
	}
	return -1, -1, fmt.Errorf("no Uid line for pid %d", pid)
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
	run, err := system.OpenRootDir(s.RunDir(), true, 0o755)
	if err != nil {
		return fmt.Errorf("start root helper: %w", err)
	}
	defer run.Close()
	logs, err := system.OpenRootDir(s.System.LogDir(), true, 0o755)
	if err != nil {
		return fmt.Errorf("start root helper: %w", err)
	}
	defer logs.Close()
	logf, err := system.OpenAppendAt(logs, filepath.Base(s.System.HelperLog()), 0o600)
	if err != nil {
		return fmt.Errorf("start root helper: %w", err)
	}
	defer logf.Close()
	sock := s.System.HelperSocket()
	args := []string{"--owner-uid", strconv.Itoa(s.Owner.OwnerUID),
		"--socket", sock, "--ready-fd", strconv.Itoa(detach.ReadyFD)}
	// The network and jailer settings install.toml records, as
	// bangerd-root.service passes them.
	args = append(args, s.Owner.HelperArgs()...)
	child, err := detach.Start(detach.Spec{Path: s.helper(), Args: args, Env: s.env(), Log: logf},
		orDefault(s.StartTimeout, DefaultStartTimeout))
	if err != nil {
		return fmt.Errorf("start root helper: %w", err)
	}
	if err := writeRecord(run, helperPidName, child); err != nil {
		return fmt.Errorf("start root helper: %w", err)
	}
	s.log().Info("root helper started", "pid", child.Pid, "socket", sock)
	return nil
}

// StopHelper stops the root helper if it runs. Root only.
func (s *Supervisor) StopHelper(ctx context.Context) error {
	if s.euid() != 0 {
		return ErrNeedRoot
	}
	if err := s.stop(s.HelperPID(), true, "root helper"); err != nil {
		return err
	}
	return s.removeRecord(helperPidName)
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
	spec := detach.Spec{
		Path: s.bangerd(), Args: []string{"--ready-fd", strconv.Itoa(detach.ReadyFD)},
		Env: append(s.env(), "HOME="+s.Owner.OwnerHome, "USER="+s.Owner.OwnerUser),
	}
	var logf *os.File
	var err error
	if euid == 0 {
		spec.Cred = &syscall.Credential{Uid: uint32(s.Owner.OwnerUID), Gid: uint32(s.Owner.OwnerGID)}
		logf, err = s.openOwnerDaemonLog()
	} else {
		// The owner, acting as itself in its own state.
		if err = os.MkdirAll(u.LogDir(), 0o700); err == nil {
			logf, err = detach.OpenLog(u.DaemonLog())
		}
	}
	if err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	defer logf.Close()
	spec.Log = logf
	child, err := detach.Start(spec, orDefault(s.StartTimeout, DefaultStartTimeout))
	if err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	if euid == 0 {
		run, err := system.OpenRootDir(s.RunDir(), true, 0o755)
		if err != nil {
			return fmt.Errorf("start daemon: %w", err)
		}
		defer run.Close()
		if err := writeRecord(run, daemonPidName, child); err != nil {
			return fmt.Errorf("start daemon: %w", err)
		}
	}
	s.log().Info("daemon started", "pid", child.Pid, "socket", u.Socket())
	return nil
}

// StopDaemon stops the owner daemon if it runs. Its VMs keep running.
func (s *Supervisor) StopDaemon(ctx context.Context) error {
	if err := s.stop(s.DaemonPID(), false, "daemon"); err != nil {
		return err
	}
	if s.euid() == 0 {
		return s.removeRecord(daemonPidName)
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
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		_, last = rpc.Invoke(cctx, client, api.MethodDaemonStatus, api.Empty{})
		ccancel()
		if last == nil {
			return nil
		}
		if s.DaemonPID() == 0 {
			return fmt.Errorf("wait for daemon: no daemon process is running (%w); last log lines:\n%s", last, s.daemonLogTail(10))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for daemon on %s: not ready after %s: %w", sock, timeout, errors.Join(last, ctx.Err()))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM to pid alone and waits for it to exit, then SIGKILL
// if it outlived the stop timeout. The signals go through a pidfd opened
// before the identity check is repeated, so the process checked is the one
// signalled even if the pid is recycled meanwhile.
func (s *Supervisor) stop(pid int, helper bool, what string) error {
	if pid <= 0 {
		return nil
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("stop %s (pid %d): %w", what, pid, err)
	}
	defer unix.Close(fd)
	start, err := detach.StartTime(pid)
	if err != nil || !s.isOurs(pidRecord{Pid: pid, StartTime: start}, helper) {
		return nil // gone, or no longer ours: nothing to stop
	}
	timeout := orDefault(s.StopTimeout, DefaultStopTimeout)
	if err := unix.PidfdSendSignal(fd, unix.SIGTERM, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("stop %s (pid %d): %w", what, pid, err)
	}
	if detach.WaitPidfd(fd, timeout) {
		s.log().Info(what+" stopped", "pid", pid)
		return nil
	}
	s.log().Warn(what+" ignored SIGTERM; killing it", "pid", pid, "after", timeout)
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill %s (pid %d): %w", what, pid, err)
	}
	if !detach.WaitPidfd(fd, 5*time.Second) {
		return fmt.Errorf("stop %s: pid %d still running after SIGKILL", what, pid)
	}
	return nil
}

// ownerParent opens the root-owned directory holding the owner's home
// (/var/lib/banger): the anchor every path into the owner's state is
// resolved from.
func (s *Supervisor) ownerParent(create bool) (*os.File, error) {
	return system.OpenRootDir(filepath.Dir(s.System.Home()), create, 0o755)
}

// openOwnerDaemonLog creates the owner's state layout the daemon expects
// (home, state/logs, run: owner-owned, 0700) and opens its log, all through
// descriptors from the root-owned parent of home with no symlink followed;
// the log is given to the owner as if the daemon had created it.
func (s *Supervisor) openOwnerDaemonLog() (*os.File, error) {
	uid, gid := s.Owner.OwnerUID, s.Owner.OwnerGID
	parent, err := s.ownerParent(true)
	if err != nil {
		return nil, err
	}
	defer parent.Close()
	home, err := system.MkdirBeneath(parent, filepath.Base(s.System.Home()), 0o700, uid, gid)
	if err != nil {
		return nil, err
	}
	defer home.Close()
	u := s.Layout()
	for _, d := range []string{u.Runtime, u.LogDir()} {
		rel, err := filepath.Rel(s.System.Home(), d)
		if err != nil || strings.HasPrefix(rel, "..") {
			return nil, fmt.Errorf("state directory %s is outside %s", d, s.System.Home())
		}
		f, err := system.MkdirBeneath(home, rel, 0o700, uid, gid)
		if err != nil {
			return nil, err
		}
		if d != u.LogDir() {
			f.Close()
			continue
		}
		defer f.Close()
		logf, err := system.OpenAppendAt(f, filepath.Base(u.DaemonLog()), 0o600)
		if err != nil {
			return nil, err
		}
		if err := unix.Fchown(int(logf.Fd()), uid, gid); err != nil {
			logf.Close()
			return nil, fmt.Errorf("give %s to uid %d: %w", logf.Name(), uid, err)
		}
		return logf, nil
	}
	return nil, errors.New("no log directory in the owner layout")
}

// daemonLogTail is the daemon log's last lines for errors. As root it is
// read through descriptors (no symlink), so the owner cannot make it echo
// another file.
func (s *Supervisor) daemonLogTail(n int) string {
	if s.euid() != 0 {
		return detach.Tail(s.Layout().DaemonLog(), n)
	}
	f, err := s.openOwnerFile(s.Layout().DaemonLog())
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	return detach.TailFile(f, n)
}

// openOwnerFile opens a regular file of the owner's state for reading,
// beneath the root-owned parent of home, following no symlink.
func (s *Supervisor) openOwnerFile(path string) (*os.File, error) {
	parentPath := filepath.Dir(s.System.Home())
	rel, err := filepath.Rel(parentPath, path)
	if err != nil || strings.HasPrefix(rel, "..") {
		return nil, fmt.Errorf("%s is outside %s", path, parentPath)
	}
	parent, err := s.ownerParent(false)
	if err != nil {
		return nil, err
	}
	defer parent.Close()
	f, err := system.OpenBeneath(parent, rel, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	return f, nil
}

// readOwnerPid reads the daemon's own pid file (the owner's).
func (s *Supervisor) readOwnerPid() int {
	var b []byte
	if s.euid() == 0 {
		f, err := s.openOwnerFile(s.Layout().PidFile())
		if err != nil {
			return 0
		}
		defer f.Close()
		b, _ = io.ReadAll(io.LimitReader(f, 64))
	} else {
		b, _ = os.ReadFile(s.Layout().PidFile())
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// pidRecord is a supervisor pid file: "PID STARTTIME".
type pidRecord struct {
	Pid       int
	StartTime uint64
}

// readRecord reads a pid file from the root-owned run directory; a
// directory anyone but root could change yields nothing.
func (s *Supervisor) readRecord(name string) pidRecord {
	run, err := system.OpenRootDir(s.RunDir(), false, 0)
	if err != nil {
		return pidRecord{}
	}
	defer run.Close()
	f, err := system.OpenBeneath(run, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return pidRecord{}
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 128))
	return parseRecord(string(b))
}

// parseRecord parses "PID STARTTIME"; a bare "PID" (written by earlier
// versions, in the same root-owned directory) has no start time.
func parseRecord(s string) pidRecord {
	f := strings.Fields(s)
	if len(f) == 0 {
		return pidRecord{}
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		return pidRecord{}
	}
	rec := pidRecord{Pid: pid}
	if len(f) > 1 {
		rec.StartTime, _ = strconv.ParseUint(f[1], 10, 64)
	}
	return rec
}

func writeRecord(run *os.File, name string, c detach.Child) error {
	data := fmt.Sprintf("%d %d\n", c.Pid, c.StartTime)
	if err := system.WriteFileAt(run, name, []byte(data), 0o644); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	return nil
}

func (s *Supervisor) removeRecord(name string) error {
	run, err := system.OpenRootDir(s.RunDir(), false, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove pid file: %w", err)
	}
	defer run.Close()
	if err := unix.Unlinkat(int(run.Fd()), name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove pid file %s: %w", name, err)
	}
	return nil
}
