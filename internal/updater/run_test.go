package updater

import (
	"context"
	"errors"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/installmeta"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/system"
)

// fakeServices records restarts. Like a real daemon, a bangerd whose
// script carries the "broken" marker fails to come up as the daemon.
type fakeServices struct {
	mu          sync.Mutex
	calls       []string
	bangerd     string
	failHelper  int // fail the first N helper restarts
	failWait    int // fail the first N readiness waits
	doctorFails bool
}

func (f *fakeServices) record(c string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
}

func (f *fakeServices) RestartHelper(context.Context) error {
	f.record("restart-helper")
	if f.failHelper > 0 {
		f.failHelper--
		return errors.New("helper unit failed to start")
	}
	return nil
}

func (f *fakeServices) RestartDaemon(context.Context) error {
	f.record("restart-daemon")
	b, err := os.ReadFile(f.bangerd)
	if err != nil {
		return err
	}
	if strings.Contains(string(b), "broken") {
		return errors.New("bangerd.service: exited with status 1")
	}
	return nil
}

func (f *fakeServices) WaitDaemonReady(context.Context) error {
	f.record("wait-ready")
	if f.failWait > 0 {
		f.failWait--
		return errors.New("daemon did not answer")
	}
	return nil
}

func (f *fakeServices) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

type updateEnv struct {
	sys     paths.System
	tg      Targets
	rs      *releaseServer
	svc     *fakeServices
	opts    Options
	deps    Deps
	before  map[string]string
	doctors int
}

var ownerMeta = installmeta.Meta{
	OwnerUser: "alice", OwnerUID: 1000, OwnerGID: 1000, OwnerHome: "/home/alice",
	Version: "v0.1.0", Commit: "old0001", BuiltAt: "2026-04-01T00:00:00Z",
	InstalledAt: time.Date(2026, 4, 2, 0, 0, 0, 0, time.UTC),
}

// newUpdateEnv installs v0.1.0 under a scratch root and serves v0.2.0 as
// latest from 127.0.0.1.
func newUpdateEnv(t *testing.T) *updateEnv {
	t.Helper()
	root := t.TempDir()
	sys := paths.System{Root: root}
	e := &updateEnv{sys: sys}
	e.tg = installTree(t, root, "old-cli", fakeBangerd("v0.1.0", 0, "old"), "old-agent", "old-helper")
	if err := installmeta.Write(sys.InstallMeta(), ownerMeta); err != nil {
		t.Fatal(err)
	}
	e.before = snapshot(t, e.tg)
	e.rs = newReleaseServer(t)
	e.rs.addRelease("v0.2.0", makeTarball(t, releaseBins("new-cli", fakeBangerd("v0.2.0", 0, "new"), "new-agent", "new-helper")), true)
	e.svc = &fakeServices{bangerd: e.tg.Bangerd}
	e.opts = Options{System: sys, ManifestURL: e.rs.manifestURL(), PublicKey: e.rs.pub}
	e.deps = Deps{
		Services: e.svc,
		Euid:     func() int { return 0 },
		Doctor: func(context.Context) error {
			e.doctors++
			if e.svc.doctorFails {
				return errors.New("doctor: kvm check failed")
			}
			return nil
		},
	}
	return e
}

func snapshot(t *testing.T, tg Targets) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, p := range tg.all() {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		m[p] = string(b)
	}
	return m
}

// assertUntouched checks the install is exactly as before: same binaries,
// no backups, install.toml unchanged, no staging left.
func (e *updateEnv) assertUntouched(t *testing.T) {
	t.Helper()
	if got := snapshot(t, e.tg); !reflect.DeepEqual(got, e.before) {
		t.Fatalf("installed binaries changed:\n got %v\nwant %v", got, e.before)
	}
	for _, p := range e.tg.all() {
		if _, err := os.Lstat(system.PreviousPath(p)); err == nil {
			t.Fatalf("%s exists", system.PreviousPath(p))
		}
	}
	meta, err := installmeta.Read(e.sys.InstallMeta())
	if err != nil {
		t.Fatal(err)
	}
	if meta != ownerMeta {
		t.Fatalf("install.toml changed: %+v", meta)
	}
	if _, err := os.Stat(e.sys.StagingDir()); err == nil {
		t.Fatalf("staging directory %s left behind", e.sys.StagingDir())
	}
	if _, err := os.Lstat(JournalPath(e.sys.StagingDir())); err == nil {
		t.Fatal("update journal left behind")
	}
}

func TestRunUpdates(t *testing.T) {
	e := newUpdateEnv(t)
	var stages []string
	e.deps.Progress = func(ev progress.Event) { stages = append(stages, ev.Message) }
	res, err := Run(context.Background(), e.opts, e.deps)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Installed || res.Current != "v0.1.0" || res.Target != "v0.2.0" || res.RolledBack {
		t.Fatalf("result %+v", res)
	}
	assertContent(t, e.tg.Banger, "new-cli")
	assertContent(t, e.tg.Agent, "new-agent")
	assertContent(t, e.tg.Bangerd, fakeBangerd("v0.2.0", 0, "new"))
	for _, p := range e.tg.all() {
		if _, err := os.Lstat(system.PreviousPath(p)); err == nil {
			t.Fatalf("backup %s kept after a healthy update", system.PreviousPath(p))
		}
	}
	if got, want := e.svc.Calls(), []string{"restart-helper", "restart-daemon", "wait-ready"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("service calls %v, want %v", got, want)
	}
	if e.doctors != 1 {
		t.Fatalf("doctor ran %d times", e.doctors)
	}
	meta, err := installmeta.Read(e.sys.InstallMeta())
	if err != nil {
		t.Fatal(err)
	}
	want := ownerMeta
	want.Version, want.Commit, want.BuiltAt = "v0.2.0", "c0ffee", "2026-05-01T00:00:00Z"
	if meta != want {
		t.Fatalf("install.toml %+v, want %+v", meta, want)
	}
	if _, err := os.Stat(e.sys.StagingDir()); err == nil {
		t.Fatal("staging directory left behind")
	}
	if _, err := os.Lstat(JournalPath(e.sys.StagingDir())); err == nil {
		t.Fatal("update journal left behind after a committed update")
	}
	if len(stages) == 0 {
		t.Fatal("no progress reported")
	}
}

// TestRunPostSwapFailuresRollBackAndRestart: every failure after the swap
// restores the old binaries and restarts the rolled-back services.
func TestRunPostSwapFailuresRollBackAndRestart(t *testing.T) {
	cases := []struct {
		name  string
		setup func(e *updateEnv)
		calls []string
	}{
		{
			name: "restart daemon fails",
			setup: func(e *updateEnv) {
				e.rs.addRelease("v0.3.0", makeTarball(t, releaseBins("broken-cli", fakeBangerd("v0.3.0", 0, "broken"), "broken-agent", "broken-helper")), false)
				e.opts.To = "v0.3.0"
			},
			calls: []string{"restart-helper", "restart-daemon", "restart-helper", "restart-daemon", "wait-ready"},
		},
		{
			name:  "restart helper fails",
			setup: func(e *updateEnv) { e.svc.failHelper = 1 },
			calls: []string{"restart-helper", "restart-helper", "restart-daemon", "wait-ready"},
		},
		{
			name:  "daemon never ready",
			setup: func(e *updateEnv) { e.svc.failWait = 1 },
			calls: []string{"restart-helper", "restart-daemon", "wait-ready", "restart-helper", "restart-daemon", "wait-ready"},
		},
		{
			name:  "doctor fails",
			setup: func(e *updateEnv) { e.svc.doctorFails = true },
			calls: []string{"restart-helper", "restart-daemon", "wait-ready", "restart-helper", "restart-daemon", "wait-ready"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newUpdateEnv(t)
			c.setup(e)
			res, err := Run(context.Background(), e.opts, e.deps)
			if !errors.Is(err, ErrRolledBack) {
				t.Fatalf("err = %v, want ErrRolledBack", err)
			}
			if !res.RolledBack || res.Installed {
				t.Fatalf("result %+v", res)
			}
			if got := e.svc.Calls(); !reflect.DeepEqual(got, c.calls) {
				t.Fatalf("service calls %v, want %v", got, c.calls)
			}
			e.assertUntouched(t)
		})
	}
}

func TestRunRollbackFailureIsReported(t *testing.T) {
	e := newUpdateEnv(t)
	e.svc.failHelper = 2 // fails during the update and again after the rollback
	_, err := Run(context.Background(), e.opts, e.deps)
	if err == nil || !strings.Contains(err.Error(), "rollback was incomplete") || !strings.Contains(err.Error(), "after rollback") {
		t.Fatalf("err = %v, want an incomplete-rollback report", err)
	}
	if got := snapshot(t, e.tg); !reflect.DeepEqual(got, e.before) {
		t.Fatalf("binaries not restored: %v", got)
	}
}

func TestRunPreSwapCheckFailureSwapsNothing(t *testing.T) {
	e := newUpdateEnv(t)
	e.rs.addRelease("v0.3.0", makeTarball(t, releaseBins("cli3", fakeBangerd("v0.3.0", 1, "needs newer store"), "agent3", "helper3")), true)
	_, err := Run(context.Background(), e.opts, e.deps)
	if !errors.Is(err, ErrPreSwapCheck) {
		t.Fatalf("err = %v, want ErrPreSwapCheck", err)
	}
	if calls := e.svc.Calls(); len(calls) != 0 {
		t.Fatalf("services touched: %v", calls)
	}
	e.assertUntouched(t)
}

func TestRunStagedVersionMismatchSwapsNothing(t *testing.T) {
	e := newUpdateEnv(t)
	e.rs.addRelease("v0.3.0", makeTarball(t, releaseBins("cli3", fakeBangerd("v0.2.9", 0, "x"), "agent3", "helper3")), true)
	if _, err := Run(context.Background(), e.opts, e.deps); !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("err = %v, want ErrVersionMismatch", err)
	}
	e.assertUntouched(t)
}

func TestRunDryRunSwapsNothing(t *testing.T) {
	e := newUpdateEnv(t)
	e.opts.DryRun = true
	res, err := Run(context.Background(), e.opts, e.deps)
	if err != nil {
		t.Fatal(err)
	}
	if !res.DryRun || res.Installed || res.Target != "v0.2.0" || res.Staged.Bangerd == "" {
		t.Fatalf("result %+v", res)
	}
	if calls := e.svc.Calls(); len(calls) != 0 {
		t.Fatalf("services touched: %v", calls)
	}
	if e.rs.hitsOf("/v0.2.0/"+TarballName("v0.2.0")) != 1 {
		t.Fatal("dry run did not download the tarball")
	}
	e.assertUntouched(t)
}

func TestRunToUnknownVersionTouchesNothing(t *testing.T) {
	e := newUpdateEnv(t)
	e.opts.To = "v9.9.9"
	_, err := Run(context.Background(), e.opts, e.deps)
	if !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("err = %v, want ErrUnknownVersion", err)
	}
	if !strings.Contains(err.Error(), "v0.2.0") {
		t.Fatalf("error does not list the available versions: %v", err)
	}
	if n := e.rs.totalHits(); n != 1 {
		t.Fatalf("%d requests, want only the manifest", n)
	}
	e.assertUntouched(t)
	if _, err := os.Stat(e.sys.StagingDir() + ".lock"); err == nil {
		t.Fatal("lock file created before the version was resolved")
	}
}

func TestRunRefusesNonRoot(t *testing.T) {
	e := newUpdateEnv(t)
	e.deps.Euid = func() int { return 1000 }
	if _, err := Run(context.Background(), e.opts, e.deps); !errors.Is(err, ErrNotRoot) {
		t.Fatalf("err = %v, want ErrNotRoot", err)
	}
	if n := e.rs.totalHits(); n != 0 {
		t.Fatalf("%d requests made before the root check", n)
	}
	e.assertUntouched(t)
}

func TestRunCheck(t *testing.T) {
	e := newUpdateEnv(t)
	e.deps.Euid = func() int { return 1000 } // --check needs no root
	e.opts.Check = true
	res, err := Run(context.Background(), e.opts, e.deps)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Checked || !res.UpdateAvailable || res.Target != "v0.2.0" || res.Current != "v0.1.0" {
		t.Fatalf("result %+v", res)
	}
	// The newest release's date comes from its verified SHA256SUMS.
	if ls := res.LatestSigned; ls.Version != "v0.2.0" || !ls.Dated || !ls.ReleasedAt.Equal(fixtureReleasedAt) {
		t.Fatalf("latest signed release %+v, want v0.2.0 released %s", ls, fixtureReleasedAt)
	}
	if n, tb := e.rs.totalHits(), e.rs.hitsOf("/v0.2.0/"+TarballName("v0.2.0")); n != 3 || tb != 0 {
		t.Fatalf("%d requests (tarball %d), want the manifest, SHA256SUMS and its signature", n, tb)
	}
	e.assertUntouched(t)

	// Without a system install, --check compares against the given version.
	os.Remove(e.sys.InstallMeta())
	e.opts.CurrentVersion = "v0.2.0"
	res, err = Run(context.Background(), e.opts, e.deps)
	if err != nil || res.UpdateAvailable {
		t.Fatalf("check from v0.2.0: %+v, %v", res, err)
	}
}

func TestRunNotInstalled(t *testing.T) {
	e := newUpdateEnv(t)
	os.Remove(e.sys.InstallMeta())
	if _, err := Run(context.Background(), e.opts, e.deps); !errors.Is(err, installmeta.ErrNotInstalled) {
		t.Fatalf("err = %v, want ErrNotInstalled", err)
	}
}

func TestRunUpToDateDoesNothing(t *testing.T) {
	e := newUpdateEnv(t)
	e.rs.set("/manifest.json", []byte(`{"schema":1,"latest":"v0.1.0","releases":[{"version":"v0.1.0","tarball":"v0.1.0/banger_v0.1.0_linux_amd64.tar.gz","sha256sums":"v0.1.0/SHA256SUMS","signature":"v0.1.0/SHA256SUMS.sig"}]}`))
	res, err := Run(context.Background(), e.opts, e.deps)
	if err != nil || res.UpdateAvailable || res.Installed {
		t.Fatalf("%+v, %v", res, err)
	}
	if n := e.rs.totalHits(); n != 1 {
		t.Fatalf("%d requests, want only the manifest", n)
	}
	e.assertUntouched(t)
}

func TestRunTamperedReleaseSwapsNothing(t *testing.T) {
	e := newUpdateEnv(t)
	sums := e.rs.get("/v0.2.0/SHA256SUMS")
	e.rs.set("/v0.2.0/SHA256SUMS", flipByte(sums, 0))
	if _, err := Run(context.Background(), e.opts, e.deps); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("err = %v, want ErrBadSignature", err)
	}
	e.assertUntouched(t)
}

func TestRunRefusesConcurrentUpdate(t *testing.T) {
	e := newUpdateEnv(t)
	unlock, err := lockUpdates(e.sys.StagingDir() + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := Run(context.Background(), e.opts, e.deps); !errors.Is(err, ErrBusy) {
		t.Fatalf("err = %v, want ErrBusy", err)
	}
	if got := snapshot(t, e.tg); !reflect.DeepEqual(got, e.before) {
		t.Fatal("binaries changed during a refused update")
	}
}

// An install made by a three-binary release has no banger-helper: the
// update refuses before swapping anything and says how to move on.
func TestRunThreeBinaryInstallSwapsNothing(t *testing.T) {
	e := newUpdateEnv(t)
	if err := os.Remove(e.tg.Helper); err != nil {
		t.Fatal(err)
	}
	_, err := Run(context.Background(), e.opts, e.deps)
	if err == nil || !strings.Contains(err.Error(), "banger-helper is not installed") || !strings.Contains(err.Error(), "sudo banger system install") {
		t.Fatalf("err = %v", err)
	}
	for _, p := range []string{e.tg.Agent, e.tg.Bangerd, e.tg.Banger} {
		assertContent(t, p, e.before[p])
		if _, err := os.Lstat(system.PreviousPath(p)); err == nil {
			t.Fatalf("%s exists", system.PreviousPath(p))
		}
	}
	if _, err := os.Lstat(e.tg.Helper); err == nil {
		t.Fatal("helper installed by a refused update")
	}
	if JournalExists(e.sys.StagingDir()) || len(e.svc.Calls()) != 0 {
		t.Fatal("journal written or services touched")
	}
}
