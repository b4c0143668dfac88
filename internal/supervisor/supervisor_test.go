package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/detach"
	"github.com/bangerdev/banger/internal/installmeta"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
)

// The test binary doubles as a fake bangerd and banger-helper (copied under
// both names into a scratch directory): with SUPERVISOR_FAKE set it plays
// the helper or the daemon, as selected by its name, and starts a "VMM" (sleep) in its own
// session the way the daemon starts QEMU.
const envFake = "SUPERVISOR_FAKE"

func TestMain(m *testing.M) {
	if mode := os.Getenv(envFake); mode != "" {
		os.Exit(fakeBangerd(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeBangerd(mode string, args []string) int {
	helper := filepath.Base(os.Args[0]) == "banger-helper"
	readyFD := 0
	for i, a := range args {
		switch a {
		case "--ready-fd":
			readyFD, _ = strconv.Atoi(args[i+1])
		}
	}
	home := os.Getenv(paths.EnvHome)
	role := "daemon"
	if helper {
		role = "helper"
	}
	// Record how we were started for the test to check (the helper in the
	// scratch root: it has no business in the owner's home).
	argsDir := home
	if helper {
		argsDir = os.Getenv(paths.EnvSystemRoot)
	}
	_ = os.WriteFile(filepath.Join(argsDir, role+".args"), []byte(fmt.Sprintf("uid=%d args=%s env_home=%s root=%s",
		os.Getuid(), strings.Join(args, " "), home, os.Getenv(paths.EnvSystemRoot))), 0o644)
	if mode == "broken" && !helper {
		fmt.Fprintln(os.Stderr, "fake bangerd: broken on purpose")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if mode == "stubborn" {
		signal.Ignore(syscall.SIGTERM)
	}
	if !helper {
		// A VMM in its own session, as vmm.Process starts QEMU.
		vmm := exec.Command("sleep", "300")
		vmm.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := vmm.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		_ = os.WriteFile(filepath.Join(home, "vmm.pid"), []byte(strconv.Itoa(vmm.Process.Pid)), 0o644)
		sock := filepath.Join(home, "run", "bangerd.sock")
		_ = os.Remove(sock)
		ln, err := net.Listen("unix", sock)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		ms := rpc.NewMethods()
		rpc.Register(ms, api.MethodDaemonStatus, func(context.Context, *rpc.Call, api.Empty) (api.DaemonStatus, error) {
			return api.DaemonStatus{PID: os.Getpid()}, nil
		})
		srv := rpc.NewServer(ms, rpc.ServerOptions{})
		go srv.Serve(ctx, ln)
	}
	detach.SignalReady(readyFD)
	if mode == "stubborn" {
		time.Sleep(time.Minute)
	}
	<-ctx.Done()
	return 0
}

type fixture struct {
	sup   *Supervisor
	home  string
	owner installmeta.Meta
}

func newFixture(t *testing.T, mode string) *fixture {
	t.Helper()
	testutil.RequireRoot(t)
	// Directories the unprivileged owner must traverse: not t.TempDir (0700).
	root, err := os.MkdirTemp("", "supervisor-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "bin", "bangerd")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	helperBin := filepath.Join(root, "bin", "banger-helper")
	if err := os.WriteFile(helperBin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	owner := installmeta.Meta{OwnerUser: "nobody", OwnerUID: 65534, OwnerGID: 65534, OwnerHome: "/nonexistent", Version: "v0.0.0-test"}
	sys := paths.System{Root: root}
	f := &fixture{
		sup: &Supervisor{
			System: sys, Owner: owner, Bangerd: bin, Helper: helperBin, Env: []string{envFake + "=" + mode},
			StopTimeout: 3 * time.Second, ReadyTimeout: 10 * time.Second, StartTimeout: 10 * time.Second,
		},
		home: sys.Home(), owner: owner,
	}
	t.Cleanup(func() {
		_ = f.sup.Stop(context.Background())
		if pid := readPidFile(filepath.Join(f.home, "vmm.pid")); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return f
}

func (f *fixture) read(t *testing.T, name string) string {
	t.Helper()
	dir := f.home
	if name == "helper.args" {
		dir = f.sup.System.Root
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// install.toml's network settings reach the helper's command line, as the
// systemd unit passes them; the daemon gets none.
func TestHelperGetsTheInstalledNetwork(t *testing.T) {
	f := newFixture(t, "ok")
	f.sup.Owner.NetworkSubnet, f.sup.Owner.NetworkBridge = "10.50.0.0/24", "bangertest"
	f.sup.Owner.FirecrackerBinary, f.sup.Owner.JailerBinary = "/opt/fc/firecracker", "/opt/fc/jailer"
	f.sup.Owner.JailerUIDStart, f.sup.Owner.JailerUIDCount = 2000000000, 16
	f.sup.Owner.JailerCgroupVersion, f.sup.Owner.JailerChrootBase = "1", "/srv/jails"
	ctx := context.Background()
	if err := f.sup.Start(ctx); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("uid=0 args=--owner-uid 65534 --socket %s --ready-fd 3 --subnet 10.50.0.0/24 --bridge bangertest"+
		" --firecracker-binary /opt/fc/firecracker --jailer-binary /opt/fc/jailer --jailer-uid-start 2000000000 --jailer-uid-count 16"+
		" --jailer-cgroup-version 1 --jailer-chroot-base /srv/jails env_home=%s root=%s",
		f.sup.Layout().HelperSocket(), f.home, f.sup.System.Root)
	if got := f.read(t, "helper.args"); got != want {
		t.Fatalf("helper started as\n %s\nwant\n %s", got, want)
	}
	if got := f.read(t, "daemon.args"); !strings.HasPrefix(got, "uid=65534 args=--ready-fd 3 env_home=") {
		t.Fatalf("daemon started as %s", got)
	}
	// New, as the CLI builds it, reads the settings from install.toml.
	if err := installmeta.Write(f.sup.System.InstallMeta(), f.sup.Owner); err != nil {
		t.Fatal(err)
	}
	s, err := New(f.sup.System, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Owner.NetworkSubnet != "10.50.0.0/24" || s.Owner.NetworkBridge != "bangertest" {
		t.Fatalf("New read network %q/%q", s.Owner.NetworkSubnet, s.Owner.NetworkBridge)
	}
	if s.Owner.JailerChrootBase != "/srv/jails" || s.Owner.JailerUIDCount != 16 {
		t.Fatalf("New read jailer settings %+v", s.Owner)
	}
}

func TestStartRunsTheLayoutAsInstalled(t *testing.T) {
	f := newFixture(t, "ok")
	ctx := context.Background()
	if err := f.sup.Start(ctx); err != nil {
		t.Fatal(err)
	}
	hpid, dpid := f.sup.HelperPID(), f.sup.DaemonPID()
	if hpid == 0 || dpid == 0 || hpid == dpid {
		t.Fatalf("helper pid %d, daemon pid %d", hpid, dpid)
	}
	if readPidFile(f.sup.HelperPidFile()) != hpid || readPidFile(f.sup.DaemonPidFile()) != dpid {
		t.Fatal("pid files do not name the running services")
	}
	helperArgs := f.read(t, "helper.args")
	wantHelper := fmt.Sprintf("uid=0 args=--owner-uid 65534 --socket %s --ready-fd 3 env_home=%s root=%s",
		f.sup.Layout().HelperSocket(), f.home, f.sup.System.Root)
	if helperArgs != wantHelper {
		t.Fatalf("helper started as\n %s\nwant\n %s", helperArgs, wantHelper)
	}
	if got := f.read(t, "daemon.args"); !strings.HasPrefix(got, "uid=65534 args=--ready-fd 3 env_home="+f.home) {
		t.Fatalf("daemon started as %s", got)
	}
	// Each service leads its own session: never the caller's group.
	for _, pid := range []int{hpid, dpid} {
		if sid, _ := syscall.Getpgid(pid); sid != pid {
			t.Fatalf("pid %d is in process group %d, not its own", pid, sid)
		}
	}
	// Starting again is a no-op.
	if err := f.sup.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if f.sup.HelperPID() != hpid || f.sup.DaemonPID() != dpid {
		t.Fatal("a second Start replaced running services")
	}
}

// The property banger update relies on: restarting the services leaves the
// VMMs the daemon started running.
func TestRestartKeepsVMMsAndReplacesServices(t *testing.T) {
	f := newFixture(t, "ok")
	ctx := context.Background()
	if err := f.sup.Start(ctx); err != nil {
		t.Fatal(err)
	}
	vmm := readPidFile(filepath.Join(f.home, "vmm.pid"))
	hpid, dpid := f.sup.HelperPID(), f.sup.DaemonPID()
	if err := f.sup.RestartHelper(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.sup.RestartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.sup.WaitDaemonReady(ctx); err != nil {
		t.Fatal(err)
	}
	if detach.Alive(hpid) || detach.Alive(dpid) {
		t.Fatalf("old services still alive after restart (helper %v, daemon %v)", detach.Alive(hpid), detach.Alive(dpid))
	}
	if n := f.sup.HelperPID(); n == 0 || n == hpid {
		t.Fatalf("helper after restart: pid %d (was %d)", n, hpid)
	}
	if n := f.sup.DaemonPID(); n == 0 || n == dpid {
		t.Fatalf("daemon after restart: pid %d (was %d)", n, dpid)
	}
	if !detach.Alive(vmm) {
		t.Fatalf("VMM (pid %d) died when the daemon was restarted", vmm)
	}
	if err := f.sup.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if f.sup.HelperPID() != 0 || f.sup.DaemonPID() != 0 {
		t.Fatal("services still running after Stop")
	}
	for _, p := range []string{f.sup.HelperPidFile(), f.sup.DaemonPidFile()} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("pid file %s left after stop", p)
		}
	}
	// The first daemon's VMM survived both its daemon and the stop.
	if !detach.Alive(vmm) {
		t.Fatalf("VMM (pid %d) died when the services were stopped", vmm)
	}
	_ = syscall.Kill(vmm, syscall.SIGKILL)
}

func TestBrokenDaemonFailsStartWithItsLog(t *testing.T) {
	f := newFixture(t, "broken")
	err := f.sup.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "broken on purpose") {
		t.Fatalf("start of a daemon that exits 1: %v", err)
	}
	if f.sup.DaemonPID() != 0 {
		t.Fatal("a dead daemon is reported as running")
	}
	err = f.sup.WaitDaemonReady(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no daemon process") {
		t.Fatalf("wait for a dead daemon did not fail at once: %v", err)
	}
}

func TestStopKillsAStubbornServiceByPidOnly(t *testing.T) {
	f := newFixture(t, "stubborn")
	ctx := context.Background()
	if err := f.sup.StartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	vmm := readPidFile(filepath.Join(f.home, "vmm.pid"))
	dpid := f.sup.DaemonPID()
	start := time.Now()
	if err := f.sup.StopDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < f.sup.StopTimeout {
		t.Fatalf("stubborn daemon stopped after %s, before the stop timeout: SIGTERM was not ignored?", d)
	}
	if detach.Alive(dpid) {
		t.Fatal("stubborn daemon survived the stop")
	}
	if !detach.Alive(vmm) {
		t.Fatal("SIGKILL reached the VMM: the stop was not limited to the daemon's pid")
	}
	_ = syscall.Kill(vmm, syscall.SIGKILL)
}

func TestStalePidFileIsNotSignalled(t *testing.T) {
	f := newFixture(t, "ok")
	// A pid file naming an unrelated live process (this test) must not
	// make the supervisor think the helper runs, nor signal it.
	if err := os.MkdirAll(f.sup.RunDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.sup.HelperPidFile(), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if pid := f.sup.HelperPID(); pid != 0 {
		t.Fatalf("unrelated pid %d taken for the helper", pid)
	}
	if err := f.sup.StopHelper(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestHelperNeedsRoot(t *testing.T) {
	s := &Supervisor{System: paths.System{Root: t.TempDir()}, Owner: installmeta.Meta{OwnerUser: "u", OwnerUID: 1000}, Euid: func() int { return 1000 }}
	if err := s.StartHelper(context.Background()); !errors.Is(err, ErrNeedRoot) {
		t.Fatalf("start helper as a user: %v", err)
	}
	s.Euid = func() int { return 1001 }
	if err := s.StartDaemon(context.Background()); err == nil || !strings.Contains(err.Error(), "neither root nor") {
		t.Fatalf("start daemon as another user: %v", err)
	}
}

func readPidFile(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return parseRecord(string(b)).Pid
}

// A pid file in the owner's state (the daemon's own, which the owner can
// write) naming a root process that runs a program called bangerd: the
// supervisor must neither take it for the daemon nor signal it.
func TestOwnerPidFileCannotAimAtRootProcess(t *testing.T) {
	f := newFixture(t, "ok")
	ctx := context.Background()
	if err := f.sup.StartHelper(ctx); err != nil {
		t.Fatal(err)
	}
	// A root process named bangerd that is not the helper.
	vhome := t.TempDir()
	if err := os.Mkdir(filepath.Join(vhome, "run"), 0o700); err != nil {
		t.Fatal(err)
	}
	victim := exec.Command(f.sup.Bangerd, "--ready-fd", "0")
	victim.Env = append(os.Environ(), envFake+"=ok", paths.EnvHome+"="+vhome)
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var werr error
	go func() { werr = victim.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = victim.Process.Kill()
		<-done
		if pid := readPidFile(filepath.Join(vhome, "vmm.pid")); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	for i := 0; i < 100 && readPidFile(filepath.Join(vhome, "vmm.pid")) == 0; i++ {
		time.Sleep(50 * time.Millisecond) // until it serves; bounded
	}
	u := f.sup.Layout()
	for _, pid := range []int{victim.Process.Pid, f.sup.HelperPID()} {
		if err := os.MkdirAll(u.Runtime, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(u.PidFile(), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := f.sup.DaemonPID(); got != 0 {
			t.Fatalf("owner pid file naming root pid %d taken for the daemon (%d)", pid, got)
		}
		if err := f.sup.StopDaemon(ctx); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-done:
		t.Fatalf("the root process named in the owner's pid file was signalled: %v", werr)
	case <-time.After(200 * time.Millisecond):
	}
	if f.sup.HelperPID() == 0 {
		t.Fatal("the helper was stopped through the owner's pid file")
	}
}
