package sysinstall

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/installmeta"
	"github.com/bangerdev/banger/internal/jailer"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/system"
	"github.com/bangerdev/banger/internal/testutil"
	"github.com/bangerdev/banger/internal/updater"
)

// sourceBinaries writes four small executables to install.
func sourceBinaries(t *testing.T) Binaries {
	t.Helper()
	dir := t.TempDir()
	b := Binaries{
		Banger:  filepath.Join(dir, "banger"),
		Bangerd: filepath.Join(dir, "bangerd"),
		Agent:   filepath.Join(dir, "banger-vsock-agent"),
		Helper:  filepath.Join(dir, "banger-helper"),
	}
	for p, body := range map[string]string{b.Banger: "cli", b.Bangerd: "daemon", b.Agent: "agent", b.Helper: "helper"} {
		if err := os.WriteFile(p, []byte("#!/bin/sh\n# "+body+"\nexit 0\n"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// testOwner is a non-root owner the test can chown to: nobody when running
// as root, else the current user.
func testOwner(t *testing.T) Owner {
	t.Helper()
	name := "nobody"
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		name = u.Username
	}
	o, err := LookupOwner(name)
	testutil.Require(t, err == nil, "no usable owner account: "+name)
	return o
}

type systemctlLog struct{ calls []string }

func (s *systemctlLog) run(_ context.Context, name string, args ...string) ([]byte, error) {
	s.calls = append(s.calls, name+" "+strings.Join(args, " "))
	return nil, nil
}

func TestInstallWithoutSystemd(t *testing.T) {
	root := t.TempDir()
	sys := paths.System{Root: root}
	owner := testOwner(t)
	sc := &systemctlLog{}
	now := time.Date(2026, 5, 2, 8, 0, 0, 0, time.UTC)
	opts := Options{
		Owner: owner, Source: sourceBinaries(t), System: sys,
		Version: "v0.2.0", Commit: "abc", BuiltAt: "2026-05-01T00:00:00Z",
		Network: Network{Subnet: "10.50.0.0/24", Bridge: "bangertest"},
		// Root's [firecracker], one field left to its default.
		Jailer:    jailer.Config{FirecrackerBinary: "/opt/fc/firecracker", JailerBinary: "/opt/fc/jailer", UIDStart: 2000000000, UIDCount: 16, CgroupVersion: "1"},
		IsSystemd: func() bool { return false }, Run: sc.run, Now: func() time.Time { return now },
	}
	res, err := Install(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.UnitsEnabled || len(sc.calls) != 0 {
		t.Fatalf("systemctl used without systemd: %v", sc.calls)
	}
	tg := updater.InstallTargets(sys)
	for p, marker := range map[string]string{tg.Banger: "cli", tg.Bangerd: "daemon", tg.Agent: "agent", tg.Helper: "helper"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o755 {
			t.Errorf("%s mode %v, want 0755", p, st.Mode().Perm())
		}
		if b, _ := os.ReadFile(p); !bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s has the wrong content", p)
		}
	}
	meta, err := installmeta.Read(sys.InstallMeta())
	if err != nil {
		t.Fatal(err)
	}
	want := installmeta.Meta{OwnerUser: owner.User, OwnerUID: owner.UID, OwnerGID: owner.GID, OwnerHome: owner.Home,
		Version: "v0.2.0", Commit: "abc", BuiltAt: "2026-05-01T00:00:00Z", InstalledAt: now,
		NetworkSubnet: "10.50.0.0/24", NetworkBridge: "bangertest",
		FirecrackerBinary: "/opt/fc/firecracker", JailerBinary: "/opt/fc/jailer", JailerUIDStart: 2000000000, JailerUIDCount: 16,
		JailerCgroupVersion: "1", JailerChrootBase: jailer.DefaultChrootBase}
	if meta != want {
		t.Fatalf("install.toml %+v, want %+v", meta, want)
	}
	for _, u := range []string{updater.HelperUnit, updater.DaemonUnit} {
		if _, err := os.Stat(filepath.Join(sys.UnitDir(), u)); err != nil {
			t.Fatalf("unit %s not written: %v", u, err)
		}
	}
	wantExec := "ExecStart=" + sys.HelperBin() + " --owner-uid " + strconv.Itoa(owner.UID) + " --socket " + sys.HelperSocket() + " --subnet 10.50.0.0/24 --bridge bangertest" +
		" --firecracker-binary /opt/fc/firecracker --jailer-binary /opt/fc/jailer --jailer-uid-start 2000000000 --jailer-uid-count 16" +
		" --jailer-cgroup-version 1 --jailer-chroot-base /var/lib/banger/jailer\n"
	if b, _ := os.ReadFile(filepath.Join(sys.UnitDir(), updater.HelperUnit)); !strings.Contains(string(b), wantExec) {
		t.Fatalf("helper unit lacks %q:\n%s", wantExec, b)
	}
	// The supervisor's argv (no systemd) comes from install.toml: the same flags.
	if got, want := strings.Join(meta.HelperArgs(), " ")+"\n", wantExec[strings.Index(wantExec, " --subnet")+1:]; got != want {
		t.Fatalf("install.toml's helper args %q, want %q", got, want)
	}
	st, err := os.Stat(sys.User().Runtime)
	if err != nil {
		t.Fatal(err)
	}
	if s := st.Sys().(*syscall.Stat_t); int(s.Uid) != owner.UID || st.Mode().Perm() != 0o700 {
		t.Fatalf("owner runtime dir uid %d mode %v", s.Uid, st.Mode().Perm())
	}

	// A reinstall keeps the first install date and refreshes the build;
	// without network settings it keeps the recorded ones, and a new
	// setting replaces only its own field.
	opts.Version = "v0.3.0"
	opts.Now = func() time.Time { return now.Add(time.Hour) }
	opts.Network = Network{}
	if _, err := Install(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	meta, _ = installmeta.Read(sys.InstallMeta())
	if meta.Version != "v0.3.0" || !meta.InstalledAt.Equal(now) || meta.NetworkSubnet != "10.50.0.0/24" || meta.NetworkBridge != "bangertest" {
		t.Fatalf("after reinstall: %+v", meta)
	}
	if b, _ := os.ReadFile(filepath.Join(sys.UnitDir(), updater.HelperUnit)); !strings.Contains(string(b), wantExec) {
		t.Fatalf("reinstalled helper unit lacks %q:\n%s", wantExec, b)
	}
	// A reinstall over an interrupted update discards its journal: the
	// binaries are now one version's and must not be "recovered".
	journal := updater.JournalPath(sys.StagingDir())
	if err := os.WriteFile(journal, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts.Network = Network{Subnet: "10.60.0.0/16"}
	if _, err := Install(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(journal); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("reinstall kept the update journal: %v", err)
	}
	if err := os.WriteFile(journal, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	meta, _ = installmeta.Read(sys.InstallMeta())
	if meta.NetworkSubnet != "10.60.0.0/16" || meta.NetworkBridge != "bangertest" {
		t.Fatalf("after reinstall with --subnet: %+v", meta)
	}

	if err := Uninstall(context.Background(), UninstallOptions{System: sys, IsSystemd: func() bool { return false }, Run: sc.run}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{tg.Banger, tg.Bangerd, tg.Agent, sys.InstallMeta(), filepath.Join(sys.UnitDir(), updater.DaemonUnit), filepath.Dir(tg.Agent), journal} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived uninstall: %v", p, err)
		}
	}
	if _, err := os.Stat(sys.Home()); err != nil {
		t.Fatalf("owner state removed without purge: %v", err)
	}
	if err := Uninstall(context.Background(), UninstallOptions{System: sys, PurgeState: true, IsSystemd: func() bool { return false }}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sys.Home()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("owner state survived purge: %v", err)
	}
}

func TestInstallWithSystemdEnablesUnits(t *testing.T) {
	sys := paths.System{Root: t.TempDir()}
	sc := &systemctlLog{}
	res, err := Install(context.Background(), Options{
		Owner: testOwner(t), Source: sourceBinaries(t), System: sys, Version: "v0.2.0",
		IsSystemd: func() bool { return true }, Run: sc.run,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"systemctl daemon-reload",
		"systemctl enable bangerd-root.service bangerd.service",
		"systemctl reset-failed bangerd-root.service bangerd.service",
		"systemctl restart bangerd-root.service",
		"systemctl restart bangerd.service",
	}
	if !res.UnitsEnabled || !reflect.DeepEqual(sc.calls, want) {
		t.Fatalf("systemctl calls %q, want %q", sc.calls, want)
	}
	// A .previous left by an update goes too.
	tg := updater.InstallTargets(sys)
	os.WriteFile(system.PreviousPath(tg.Bangerd), []byte("old"), 0o755)
	sc.calls = nil
	if err := Uninstall(context.Background(), UninstallOptions{System: sys, IsSystemd: func() bool { return true }, Run: sc.run}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(system.PreviousPath(tg.Bangerd)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("bangerd.previous survived uninstall")
	}
	want = []string{"systemctl disable --now bangerd.service bangerd-root.service", "systemctl daemon-reload"}
	if !reflect.DeepEqual(sc.calls, want) {
		t.Fatalf("uninstall systemctl calls %q, want %q", sc.calls, want)
	}
}

func TestInstallRefuses(t *testing.T) {
	sys := paths.System{Root: t.TempDir()}
	base := Options{Owner: testOwner(t), Source: sourceBinaries(t), System: sys, Version: "v0.2.0", IsSystemd: func() bool { return false }}

	root := base
	root.Owner = Owner{User: "root", UID: 0, GID: 0, Home: "/root"}
	if _, err := Install(context.Background(), root); !errors.Is(err, ErrRootOwner) {
		t.Fatalf("root owner: %v, want ErrRootOwner", err)
	}
	odd := base
	odd.Owner.User = "bad user%n"
	if _, err := Install(context.Background(), odd); err == nil {
		t.Fatal("owner name with specifiers accepted")
	}
	missing := base
	missing.Source.Bangerd = filepath.Join(t.TempDir(), "nope")
	if _, err := Install(context.Background(), missing); err == nil {
		t.Fatal("missing source binary accepted")
	}
	for _, n := range []Network{
		{Subnet: "10.50.0.1/24"},       // host bits set
		{Subnet: "not-a-cidr"},         // not a prefix
		{Subnet: "10.50.0.0/24 --x y"}, // an extra argument
		{Bridge: "eth0"},               // not banger's
		{Bridge: "banger0 --debug"},    // an extra argument
	} {
		bad := base
		bad.Network = n
		if _, err := Install(context.Background(), bad); err == nil {
			t.Fatalf("network %+v accepted", n)
		}
	}
	for _, j := range []jailer.Config{
		{JailerBinary: "jailer"},                      // a PATH lookup
		{FirecrackerBinary: "/opt/fc/../firecracker"}, // not clean
		{UIDStart: 5},                      // a system uid
		{UIDCount: 1 << 20},                // too many
		{CgroupVersion: "3"},               //
		{ChrootBase: "/srv/jails --debug"}, // an extra argument
		{ChrootBase: "/srv/%n"},            // a systemd specifier
	} {
		bad := base
		bad.Jailer = j
		if _, err := Install(context.Background(), bad); err == nil {
			t.Fatalf("jailer settings %+v accepted", j)
		}
	}
	if entries, _ := os.ReadDir(sys.Root); len(entries) != 0 {
		t.Fatalf("failed installs wrote %v", entries)
	}
}

func TestRenderedUnits(t *testing.T) {
	sys := paths.System{Root: "/"}
	alice := Owner{User: "alice", UID: 1000, GID: 1001, Home: "/home/alice"}
	units, err := RenderUnits(sys, alice, Network{}, jailer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	helper, daemon := string(units[updater.HelperUnit]), string(units[updater.DaemonUnit])
	for _, want := range []string{
		"ExecStart=/usr/local/lib/banger/banger-helper --owner-uid 1000 --socket /run/banger/root-helper.sock\n",
		"KillMode=process\n", "SendSIGKILL=no\n", "Environment=BANGER_HOME=/var/lib/banger/home\n",
	} {
		if !strings.Contains(helper, want) {
			t.Errorf("helper unit lacks %q:\n%s", want, helper)
		}
	}
	for _, want := range []string{
		"User=alice\n", "Group=1001\n", "ExecStart=/usr/local/bin/bangerd\n", "Restart=on-failure\n",
		"KillMode=process\n", "SendSIGKILL=no\n", "Environment=BANGER_HOME=/var/lib/banger/home\n", "Wants=bangerd-root.service\n",
	} {
		if !strings.Contains(daemon, want) {
			t.Errorf("daemon unit lacks %q:\n%s", want, daemon)
		}
	}
	if strings.Contains(helper+daemon, "BANGER_SYSTEM_ROOT") {
		t.Error("production units carry BANGER_SYSTEM_ROOT")
	}
	if strings.Contains(daemon, "Requires=") {
		t.Error("daemon unit Requires= the helper: restarting the helper would restart the daemon")
	}

	for _, tc := range []struct {
		net  Network
		exec string
	}{
		{Network{Subnet: "10.50.0.0/24", Bridge: "bangertest"}, " --subnet 10.50.0.0/24 --bridge bangertest\n"},
		{Network{Subnet: "10.50.0.0/24"}, " --subnet 10.50.0.0/24\n"},
		{Network{Bridge: "bangertest"}, " --bridge bangertest\n"},
	} {
		units, err := RenderUnits(sys, alice, tc.net, jailer.Config{})
		if err != nil {
			t.Fatal(err)
		}
		want := "ExecStart=/usr/local/lib/banger/banger-helper --owner-uid 1000 --socket /run/banger/root-helper.sock" + tc.exec
		if h := string(units[updater.HelperUnit]); !strings.Contains(h, want) {
			t.Errorf("helper unit for %+v lacks %q:\n%s", tc.net, want, h)
		}
		if d := string(units[updater.DaemonUnit]); !strings.Contains(d, "ExecStart=/usr/local/bin/bangerd\n") {
			t.Errorf("daemon unit for %+v got helper flags:\n%s", tc.net, d)
		}
	}
	if _, err := RenderUnits(sys, alice, Network{Bridge: "banger%n"}, jailer.Config{}); err == nil {
		t.Error("bridge with a systemd specifier rendered")
	}
	// Root's [firecracker] (here the defaults) follows the network flags.
	units, err = RenderUnits(sys, alice, Network{Bridge: "bangertest"}, jailer.Default())
	if err != nil {
		t.Fatal(err)
	}
	want := "ExecStart=/usr/local/lib/banger/banger-helper --owner-uid 1000 --socket /run/banger/root-helper.sock --bridge bangertest" +
		" --firecracker-binary /usr/local/bin/firecracker --jailer-binary /usr/local/bin/jailer --jailer-uid-start 1900000000" +
		" --jailer-uid-count 1024 --jailer-cgroup-version 2 --jailer-chroot-base /var/lib/banger/jailer\n"
	if h := string(units[updater.HelperUnit]); !strings.Contains(h, want) {
		t.Errorf("helper unit lacks %q:\n%s", want, h)
	}
}

// TestUnitsPassSystemdAnalyze renders the units under a scratch root whose
// bangerd exists, and checks that systemd-analyze verify accepts them with
// no warning at all.
func TestUnitsPassSystemdAnalyze(t *testing.T) {
	analyze := testutil.RequireBinary(t, "systemd-analyze")
	root := t.TempDir()
	sys := paths.System{Root: root}
	for _, p := range []string{sys.BangerdBin(), sys.HelperBin()} {
		if err := system.CopyFileAtomic("/bin/true", p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cur, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	owner, err := LookupOwner(cur.Username)
	if err != nil {
		t.Fatal(err)
	}
	units, err := RenderUnits(sys, owner, Network{Subnet: "10.50.0.0/24", Bridge: "bangertest"}, jailer.Default())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(units[updater.HelperUnit]), "Environment=BANGER_SYSTEM_ROOT="+root+"\n") {
		t.Fatalf("scratch-root unit lacks BANGER_SYSTEM_ROOT:\n%s", units[updater.HelperUnit])
	}
	if !strings.Contains(string(units[updater.HelperUnit]), " --subnet 10.50.0.0/24 --bridge bangertest --firecracker-binary /usr/local/bin/firecracker"+
		" --jailer-binary /usr/local/bin/jailer --jailer-uid-start 1900000000 --jailer-uid-count 1024 --jailer-cgroup-version 2 --jailer-chroot-base /var/lib/banger/jailer\n") {
		t.Fatalf("helper unit lacks the network and jailer flags:\n%s", units[updater.HelperUnit])
	}
	dir := t.TempDir()
	var files []string
	for name, body := range units {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, body, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, analyze, append([]string{"verify", "--man=no"}, files...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out.String())
	}
	if s := strings.TrimSpace(out.String()); s != "" {
		t.Fatalf("systemd-analyze verify warned:\n%s", s)
	}

	// The check can fail: a unit naming a missing binary is rejected.
	os.Remove(sys.HelperBin())
	cmd = exec.CommandContext(ctx, analyze, append([]string{"verify", "--man=no"}, files...)...)
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("systemd-analyze accepted units with a missing ExecStart binary:\n%s", out)
	}
}

// The owner controls its home: a state directory replaced by a symlink to
// a root-owned directory must not make install chown or chmod that target.
func TestOwnerStateRefusesPlantedSymlinks(t *testing.T) {
	testutil.RequireRoot(t)
	root := t.TempDir()
	sys := paths.System{Root: root}
	owner := Owner{User: "nobody", UID: 65534, GID: 65534, Home: "/nonexistent"}
	if err := ensureOwnerState(sys, owner); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(root, "etc-sentinel")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{sys.User().State, sys.User().Config} {
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, d); err != nil {
			t.Fatal(err)
		}
		err := ensureOwnerState(sys, owner)
		if err == nil || !strings.Contains(err.Error(), "symlink") {
			t.Fatalf("install through a symlinked %s: %v", d, err)
		}
		st, err := os.Stat(target)
		if err != nil {
			t.Fatal(err)
		}
		if s := st.Sys().(*syscall.Stat_t); s.Uid != 0 || st.Mode().Perm() != 0o755 {
			t.Fatalf("symlink target changed: uid %d mode %v", s.Uid, st.Mode().Perm())
		}
		if entries, _ := os.ReadDir(target); len(entries) != 0 {
			t.Fatalf("created inside the symlink target: %v", entries)
		}
		os.Remove(d)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
}
