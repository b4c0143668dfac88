package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/installmeta"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/supervisor"
	"github.com/bangerdev/banger/internal/system"
	"github.com/bangerdev/banger/internal/testutil"
	"github.com/bangerdev/banger/internal/updater"
)

// The smoke scenarios of `banger update`: releases built and signed here
// with a development key, served from 127.0.0.1, installed into a scratch
// system root (BANGER_SYSTEM_ROOT) whose services run under banger's
// supervisor, as on a host without systemd.

const (
	smokeGood   = "v0.smoke.0"
	smokeBroken = "v0.smoke.broken-bangerd"
	smokeOwner  = "banger-e2e-owner"
	smokeOther  = "banger-e2e-other"
)

// smokeReleases is the release server shared by every scenario of a run.
type smokeReleases struct {
	manifestURL string
	pubkey      string
}

var (
	smokeOnce sync.Once
	smokeRel  smokeReleases

	smokeDirOnce sync.Once
	smokeDir     string
	smokeDirErr  error
)

func releases(t *testing.T) smokeReleases {
	t.Helper()
	dir := smokeReleaseDir(t)
	smokeOnce.Do(func() {
		srv := httptest.NewServer(http.FileServer(http.Dir(dir))) // 127.0.0.1:0; lives as long as the run
		smokeRel = smokeReleases{manifestURL: srv.URL + "/manifest.json", pubkey: filepath.Join(dir, "release.pub")}
	})
	return smokeRel
}

// smokeReleaseDir builds the smoke releases once per run and returns their
// directory (manifest, artefacts, release.pub).
func smokeReleaseDir(t *testing.T) string {
	t.Helper()
	smokeDirOnce.Do(func() { smokeDir, smokeDirErr = buildSmokeReleases() })
	if smokeDirErr != nil {
		t.Fatal(smokeDirErr)
	}
	return smokeDir
}

// buildSmokeReleases builds v0.smoke.0 (a normal build) and
// v0.smoke.broken-bangerd (whose bangerd passes the pre-swap checks and
// serves as root helper, but exits 1 as the owner daemon) with
// tools/mkrelease into binDir/releases. Inside the systemd container they
// were built outside, under the same path.
func buildSmokeReleases() (string, error) {
	out := filepath.Join(binDir, "releases")
	if os.Getenv(envSystemdBinDir) != "" {
		return out, nil
	}
	brokenDir := filepath.Join(binDir, "broken")
	if os.Getenv(testutil.EnvInNetNS) == "1" {
		// A network-namespace re-run shares binDir with the run that
		// started it, which may be serving its own releases from there.
		sub := filepath.Join(binDir, fmt.Sprintf("netns-%d", os.Getpid()))
		out, brokenDir = filepath.Join(sub, "releases"), filepath.Join(sub, "broken")
	}
	if err := os.MkdirAll(brokenDir, 0o755); err != nil {
		return "", err
	}
	broken := filepath.Join(brokenDir, "bangerd")
	script := fmt.Sprintf(`#!/bin/sh
# bangerd of %[1]s: passes the updater's checks, serves as root helper,
# and refuses to run as the owner daemon.
for a in "$@"; do
  case "$a" in
  --version) echo "bangerd %[1]s (commit smoke, built 2026-01-01T00:00:00Z, go)"; exit 0 ;;
  --check-migrations) echo "migrate: ok"; exit 0 ;;
  --root-helper) exec %[2]s "$@" ;;
  esac
done
echo "bangerd %[1]s: broken on purpose, exiting" >&2
exit 1
`, smokeBroken, filepath.Join(binDir, "bangerd"))
	if err := os.WriteFile(broken, []byte(script), 0o755); err != nil {
		return "", err
	}
	for _, args := range [][]string{
		{"--version", smokeBroken, "--latest=false", "--banger", filepath.Join(binDir, "banger"),
			"--bangerd", broken, "--agent", filepath.Join(binDir, "banger-vsock-agent")},
		{"--version", smokeGood},
	} {
		cmd := exec.Command("go", append([]string{"run", "./tools/mkrelease", "--out", out, "--src", "."}, args...)...)
		cmd.Dir = ".."
		if msg, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("mkrelease %v: %w\n%s", args, err, msg)
		}
	}
	return out, nil
}

// sysInstall is banger installed into a scratch system root, or (systemd
// set) into the root of the systemd container, its services run by systemd.
type sysInstall struct {
	t       *testing.T
	root    string
	sys     paths.System
	rel     smokeReleases
	systemd bool
}

// helperPID is the running root helper's pid, or 0: bangerd-root.service's
// main pid under systemd, else the supervisor's record.
func (s *sysInstall) helperPID() int {
	s.t.Helper()
	if s.systemd {
		return unitMainPID(s.t, updater.HelperUnit)
	}
	sup := &supervisor.Supervisor{System: s.sys, Owner: s.meta()}
	return sup.HelperPID()
}

// installSystem runs `banger system install --owner banger-e2e-owner` from
// the test build into a fresh root; its services start under the
// supervisor. Cleanup uninstalls (stopping them) and removes the root.
func installSystem(t *testing.T) *sysInstall {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "useradd")
	ownerUID, ownerGID := ensureTestUser(t, smokeOwner)
	rel := releases(t)
	// Not t.TempDir: the owner must traverse it (0700 there).
	root, err := os.MkdirTemp("", "banger-sysroot-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &sysInstall{t: t, root: root, sys: paths.System{Root: root}, rel: rel}
	t.Cleanup(func() {
		_, _, _ = s.runBin(filepath.Join(binDir, "banger"), "system", "uninstall", "--purge")
		// Safety net: nothing started here may outlive the test.
		sup := &supervisor.Supervisor{System: s.sys, Owner: installmeta.Meta{OwnerUser: smokeOwner, OwnerUID: int(ownerUID), OwnerGID: int(ownerGID)}}
		for _, pid := range []int{sup.DaemonPID(), sup.HelperPID()} {
			if pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		os.RemoveAll(root)
	})
	out, errOut, code := s.runBin(filepath.Join(binDir, "banger"), "system", "install", "--owner", smokeOwner)
	if code != 0 {
		t.Fatalf("system install: exit %d\n%s%s\ndaemon log:\n%s", code, out, errOut, readFile(s.sys.User().DaemonLog()))
	}
	if !strings.Contains(out, "daemon running") {
		t.Fatalf("system install did not start the daemon:\n%s", out)
	}
	return s
}

// env is the CLI's environment: the scratch root and the owner daemon's
// BANGER_HOME (as the units set it), nothing from a developer instance.
func (s *sysInstall) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case paths.EnvHome, paths.EnvSystemRoot, "BANGER_DAEMON_BIN", "BANGER_AGENT_BIN":
			continue
		}
		env = append(env, kv)
	}
	return append(env, paths.EnvSystemRoot+"="+s.root, paths.EnvHome+"="+s.sys.Home())
}

func (s *sysInstall) runBin(bin string, args ...string) (string, string, int) {
	return s.runAsUser(nil, bin, args...)
}

func (s *sysInstall) runAsUser(cred *syscall.Credential, bin string, args ...string) (string, string, int) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = s.env()
	cmd.Stdin = nil // no terminal: confirmations must not wait
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = "/"
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			s.t.Fatalf("run %s %v: %v", bin, args, err)
		}
		code = ee.ExitCode()
	}
	return stdout.String(), stderr.String(), code
}

// banger runs the installed CLI (the one update replaces).
func (s *sysInstall) banger(args ...string) (string, string, int) {
	return s.runBin(s.sys.BangerBin(), args...)
}

func (s *sysInstall) ok(args ...string) string {
	s.t.Helper()
	out, errOut, code := s.banger(args...)
	if code != 0 {
		s.t.Fatalf("banger %s: exit %d\nstdout: %s\nstderr: %s\ndaemon log:\n%s", strings.Join(args, " "), code, out, errOut, s.daemonLog())
	}
	return out
}

// daemonLog is the owner daemon's log: the units' journal under systemd.
func (s *sysInstall) daemonLog() string {
	if s.systemd {
		return sysdJournal()
	}
	return readFile(s.sys.User().DaemonLog())
}

func (s *sysInstall) update(args ...string) (string, string, int) {
	return s.banger(append([]string{"update", "--manifest-url", s.rel.manifestURL, "--pubkey-file", s.rel.pubkey}, args...)...)
}

// installTree hashes every file of the install (binaries, install.toml,
// units, staging area), not the owner's state, the run directory or the
// helper's log directory, which move on.
func (s *sysInstall) installTree() string {
	s.t.Helper()
	var lines []string
	home := s.sys.Home()
	err := filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == home || p == filepath.Join(s.root, "run") || p == s.sys.LogDir() {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			lines = append(lines, fmt.Sprintf("%x %s", sha256.Sum256(b), p))
		} else {
			lines = append(lines, d.Type().String()+" "+p)
		}
		return nil
	})
	if err != nil {
		s.t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func (s *sysInstall) binaries() map[string][]byte {
	s.t.Helper()
	out := map[string][]byte{}
	for _, p := range []string{s.sys.BangerBin(), s.sys.BangerdBin(), s.sys.AgentBin(), s.sys.HelperBin()} {
		b, err := os.ReadFile(p)
		if err != nil {
			s.t.Fatal(err)
		}
		out[p] = b
	}
	return out
}

func (s *sysInstall) meta() installmeta.Meta {
	s.t.Helper()
	m, err := installmeta.Read(s.sys.InstallMeta())
	if err != nil {
		s.t.Fatal(err)
	}
	return m
}

type versions struct {
	Client struct{ Version string }
	Daemon *struct{ Version string }
}

func (s *sysInstall) versions() versions {
	s.t.Helper()
	var v versions
	if err := json.Unmarshal([]byte(s.ok("version", "--json")), &v); err != nil {
		s.t.Fatal(err)
	}
	return v
}

func (s *sysInstall) daemonPID() int {
	s.t.Helper()
	var st struct{ PID int }
	if err := json.Unmarshal([]byte(s.ok("daemon", "status", "--json")), &st); err != nil {
		s.t.Fatal(err)
	}
	return st.PID
}

func (s *sysInstall) requireNoBackups() {
	s.t.Helper()
	for _, p := range []string{s.sys.BangerBin(), s.sys.BangerdBin(), s.sys.AgentBin(), s.sys.HelperBin()} {
		if _, err := os.Stat(system.PreviousPath(p)); err == nil {
			s.t.Fatalf("%s left behind", system.PreviousPath(p))
		}
	}
}

func TestUpdateSmoke(t *testing.T) {
	s := installSystem(t)
	installed := s.meta()
	if installed.Version != "v0.0.0-e2e" || installed.OwnerUser != smokeOwner {
		t.Fatalf("install.toml after install: %+v", installed)
	}

	t.Run("update_check", func(t *testing.T) {
		before := s.installTree()
		out, errOut, code := s.update("--check")
		if code != 0 || !strings.Contains(out, "installed: v0.0.0-e2e") || !strings.Contains(out, "update available: "+smokeGood) {
			t.Fatalf("update --check: exit %d\n%s%s", code, out, errOut)
		}
		// The date comes from the newest release's signed SHA256SUMS.
		if !strings.Contains(out, "newest signed release: "+smokeGood+", released 20") {
			t.Fatalf("update --check does not report the signed release date:\n%s", out)
		}
		if s.installTree() != before {
			t.Fatal("update --check changed the install")
		}
	})

	t.Run("update_to_unknown", func(t *testing.T) {
		before := s.installTree()
		out, errOut, code := s.update("--to", "v9.9.9", "--yes")
		if code == 0 || !strings.Contains(errOut, "v9.9.9") || !strings.Contains(errOut, "not found") {
			t.Fatalf("update --to v9.9.9: exit %d\n%s%s", code, out, errOut)
		}
		if after := s.installTree(); after != before {
			t.Fatalf("update --to an unknown version changed the install:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})

	t.Run("update_no_root", func(t *testing.T) {
		uid, gid := ensureTestUser(t, smokeOther)
		before := s.installTree()
		out, errOut, code := s.runAsUser(&syscall.Credential{Uid: uid, Gid: gid}, s.sys.BangerBin(),
			"update", "--yes", "--manifest-url", s.rel.manifestURL, "--pubkey-file", s.rel.pubkey)
		if code == 0 || !strings.Contains(errOut, "must run as root") {
			t.Fatalf("update as uid %d: exit %d\n%s%s", uid, code, out, errOut)
		}
		if s.installTree() != before {
			t.Fatal("a refused update changed the install")
		}
	})

	t.Run("update_without_yes_or_terminal", func(t *testing.T) {
		bins := s.binaries()
		out, errOut, code := s.update()
		if code == 0 || !strings.Contains(errOut, "--yes") {
			t.Fatalf("update with no terminal and no --yes: exit %d\n%s%s", code, out, errOut)
		}
		requireSameBinaries(t, bins, s.binaries())
	})

	t.Run("update_dry_run", func(t *testing.T) {
		bins := s.binaries()
		pid := s.daemonPID()
		out, errOut, code := s.update("--dry-run")
		if code != 0 || !strings.Contains(out, "dry run: "+smokeGood) {
			t.Fatalf("update --dry-run: exit %d\n%s%s", code, out, errOut)
		}
		for _, step := range []string{"downloading and verifying " + smokeGood, "--check-migrations --system"} {
			if !strings.Contains(errOut, step) {
				t.Fatalf("dry run did not report %q:\n%s", step, errOut)
			}
		}
		requireSameBinaries(t, bins, s.binaries())
		s.requireNoBackups()
		if v := s.meta().Version; v != "v0.0.0-e2e" {
			t.Fatalf("install.toml version after a dry run: %s", v)
		}
		if _, err := os.Stat(s.sys.StagingDir()); err == nil {
			t.Fatal("staging directory left after the dry run")
		}
		if v := s.versions(); v.Daemon == nil || v.Daemon.Version != "v0.0.0-e2e" || s.daemonPID() != pid {
			t.Fatalf("daemon changed by a dry run: %+v", v)
		}
	})

	t.Run("update_keeps_daemon_alive", func(t *testing.T) {
		updateToGood(t, s, installed)
	})

	t.Run("update_rollback", func(t *testing.T) {
		updateToBrokenRollsBack(t, s)
	})
}

// updateToGood performs the real update to v0.smoke.0 and checks that the
// services were restarted on the new binaries.
func updateToGood(t *testing.T, s *sysInstall, installed installmeta.Meta) {
	t.Helper()
	oldPID := s.daemonPID()
	oldHelper := s.helperPID()
	out, errOut, code := s.update("--yes")
	if code != 0 || !strings.Contains(out, "updated v0.0.0-e2e → "+smokeGood) {
		t.Fatalf("update: exit %d\n%s%s\ndaemon log:\n%s", code, out, errOut, s.daemonLog())
	}
	for _, step := range []string{"swapping binaries", "restarting root helper", "restarting daemon", "checking the new install (doctor)"} {
		if !strings.Contains(errOut, step) {
			t.Fatalf("update did not report %q:\n%s", step, errOut)
		}
	}
	v := s.versions()
	if v.Client.Version != smokeGood || v.Daemon == nil || v.Daemon.Version != smokeGood {
		t.Fatalf("after the update: %+v", v)
	}
	if pid := s.daemonPID(); pid == oldPID || processAlive(oldPID) {
		t.Fatalf("daemon was not restarted (pid %d, old %d alive: %v)", pid, oldPID, processAlive(oldPID))
	}
	if h := s.helperPID(); h == 0 || h == oldHelper || processAlive(oldHelper) {
		t.Fatalf("root helper was not restarted (pid %d, old %d)", h, oldHelper)
	}
	m := s.meta()
	if m.Version != smokeGood || m.OwnerUser != installed.OwnerUser || m.OwnerUID != installed.OwnerUID ||
		m.OwnerHome != installed.OwnerHome || !m.InstalledAt.Equal(installed.InstalledAt) {
		t.Fatalf("install.toml after the update: %+v (before %+v)", m, installed)
	}
	s.requireNoBackups()
}

// updateToBrokenRollsBack updates to the broken release: the daemon restart
// fails, the previous binaries are restored and restarted, the root helper
// included (a new pid, answering).
func updateToBrokenRollsBack(t *testing.T, s *sysInstall) {
	t.Helper()
	bins := s.binaries()
	before := s.meta()
	oldHelper := s.helperPID()
	if oldHelper == 0 {
		t.Fatal("root helper not running before the update")
	}
	out, errOut, code := s.update("--to", smokeBroken, "--yes")
	if code == 0 || !strings.Contains(out+errOut, "rolled back") || !strings.Contains(out+errOut, "broken on purpose") {
		t.Fatalf("update to the broken release: exit %d\n%s%s", code, out, errOut)
	}
	requireSameBinaries(t, bins, s.binaries())
	s.requireNoBackups()
	if v := s.versions(); v.Daemon == nil || v.Daemon.Version != before.Version {
		t.Fatalf("after the rollback the daemon runs %+v, want %s", v.Daemon, before.Version)
	}
	if m := s.meta(); m.Version != before.Version {
		t.Fatalf("install.toml after the rollback: %s, want %s", m.Version, before.Version)
	}
	if _, err := os.Lstat(updater.JournalPath(s.sys.StagingDir())); err == nil {
		t.Fatal("update journal left after a complete rollback")
	}
	helper := s.helperPID()
	if helper == 0 || helper == oldHelper || processAlive(oldHelper) {
		t.Fatalf("root helper not restarted by the rollback (pid %d, old %d alive: %v)", helper, oldHelper, processAlive(oldHelper))
	}
	// It answers: the daemon reaches it and doctor reports its new pid.
	c, ok := s.journalDoctor()["root helper"]
	if !ok || c.Status != "ok" || !strings.Contains(c.Detail, fmt.Sprintf("pid %d,", helper)) {
		t.Fatalf("root helper after the rollback: %+v, want ok with pid %d", c, helper)
	}
}

func requireSameBinaries(t *testing.T, want, got map[string][]byte) {
	t.Helper()
	for p, b := range want {
		if !bytes.Equal(b, got[p]) {
			t.Fatalf("%s differs from the binary installed before", p)
		}
	}
}

// With a VM running, the update and its rollback restart the daemon and
// the helper but never its VMM: the same VM (same boot_id, same QEMU pid)
// answers afterwards.
func TestUpdateKeepsVMAlive(t *testing.T) {
	testutil.Kernel(t)
	testutil.Image(t)
	testutil.RequireQEMU(t)
	if !testutil.InNetNS(t) {
		return
	}
	// The owner daemon runs unprivileged: its QEMU gets the tap as a
	// descriptor opened by the root helper, so /dev/net/tun may stay 0600.
	s := installSystem(t)
	installed := s.meta()

	t.Cleanup(func() { s.banger("vm", "rm", "--force", "smoke") })
	vm, guestBoot := s.bootSmokeVM(filepath.Join(s.root, "fixtures"))
	// The unprivileged owner daemon's QEMU was moved out of its cgroup by
	// the supervisor-run root helper.
	if msg := vmmCgroupProblem(vm); msg != "" {
		t.Fatal(msg)
	}

	t.Run("update_keeps_vm_alive", func(t *testing.T) {
		updateToGood(t, s, installed)
		s.requireSameVM(vm, guestBoot)
	})
	t.Run("update_rollback_keeps_vm_alive", func(t *testing.T) {
		updateToBrokenRollsBack(t, s)
		s.requireSameVM(vm, guestBoot)
	})
}

func (s *sysInstall) inspect(name string) model.VM {
	s.t.Helper()
	var vm model.VM
	if err := json.Unmarshal([]byte(s.ok("vm", "inspect", name, "--json")), &vm); err != nil {
		s.t.Fatal(err)
	}
	return vm
}

func (s *sysInstall) requireSameVM(before model.VM, guestBoot string) {
	s.t.Helper()
	if !processAlive(before.PID) {
		s.t.Fatalf("QEMU (pid %d) of vm %s died", before.PID, before.Name)
	}
	after := s.inspect(before.Name)
	if msg := vmmCgroupProblem(after); msg != "" {
		s.t.Fatal(msg)
	}
	if after.BootID != before.BootID || after.PID != before.PID || after.State != before.State {
		s.t.Fatalf("vm %s changed: before boot_id %s pid %d %s, after boot_id %s pid %d %s",
			before.Name, before.BootID, before.PID, before.State, after.BootID, after.PID, after.State)
	}
	out := s.ok("vm", "exec", before.Name, "--", "cat", "/proc/sys/kernel/random/boot_id")
	if got := strings.TrimSpace(out); got == "" || got != guestBoot {
		s.t.Fatalf("guest kernel boot_id %q, want %q: the guest rebooted", got, guestBoot)
	}
	if host := strings.TrimSpace(s.ok("vm", "ssh", before.Name, "--", "hostname")); host != before.Name {
		s.t.Fatalf("vm ssh %s -- hostname said %q", before.Name, host)
	}
}

// daemon_admin: the admin commands against a system install.
func TestDaemonAdmin(t *testing.T) {
	s := installSystem(t)
	if got := strings.TrimSpace(s.ok("daemon", "socket")); got != s.sys.User().Socket() {
		t.Fatalf("daemon socket: %q, want %q", got, s.sys.User().Socket())
	}
	out, errOut, code := s.runBin(s.sys.BangerdBin(), "--check-migrations", "--system")
	if code != 0 || !strings.Contains(out, "migrate: ok") {
		t.Fatalf("bangerd --check-migrations --system: exit %d\n%s%s", code, out, errOut)
	}
	pid := s.daemonPID()
	if owner := procUID(t, pid); owner != s.meta().OwnerUID {
		t.Fatalf("daemon runs as uid %d, want the owner's %d", owner, s.meta().OwnerUID)
	}
	sup := &supervisor.Supervisor{System: s.sys, Owner: s.meta()}
	helper := sup.HelperPID()
	if helper == 0 || procUID(t, helper) != 0 {
		t.Fatalf("root helper: pid %d", helper)
	}
	if out := s.ok("daemon", "stop"); !strings.Contains(out, "daemon stopped") {
		t.Fatalf("daemon stop said %q", out)
	}
	if processAlive(pid) {
		t.Fatal("daemon still alive after stop")
	}
	if !processAlive(helper) {
		t.Fatal("daemon stop took the root helper down")
	}
	if _, errOut, code := s.banger("daemon", "status"); code == 0 || !strings.Contains(errOut, "not running") {
		t.Fatalf("status after stop: exit %d %s", code, errOut)
	}
}

func procUID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0] == "Uid:" {
			uid, _ := strconv.Atoi(f[2]) // effective
			return uid
		}
	}
	t.Fatalf("no Uid line for pid %d", pid)
	return -1
}
