package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/testutil"
	"github.com/bangerdev/banger/internal/updater"
)

// The systemd path, for real: TestSystemd boots systemd as PID 1 in a
// container it makes (systemd-nspawn -b over an overlay of the host root,
// with its own network namespace), re-executes itself inside it, and there
// runs `banger system install`, boots a QEMU VM, and drives the update
// smoke scenarios and the units through real systemctl.

// envSystemdBinDir, set only inside the container, names the binaries the
// outside run built (bind-mounted at the same path).
const envSystemdBinDir = "BANGER_E2E_SYSTEMD_BIN_DIR"

const (
	sysdBootTimeout  = 90 * time.Second
	sysdInnerTimeout = 15 * time.Minute
	sysdStopTimeout  = 30 * time.Second
)

func TestSystemd(t *testing.T) {
	if os.Getenv(envSystemdBinDir) != "" {
		sysdInside(t)
		return
	}
	testutil.RequireRoot(t)
	testutil.RequireQEMU(t)
	vmlinuz, modules := testutil.Kernel(t)
	image := testutil.Image(t)
	for _, b := range []string{"systemd-nspawn", "nsenter", "useradd"} {
		testutil.RequireBinary(t, b)
	}
	rel := smokeReleaseDir(t) // built here: the container has no toolchain need
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	hostLinks := sysdHostLinks(t)
	bootStart := time.Now()
	c := sysdBoot(t, []string{binDir, filepath.Dir(exe), filepath.Dir(rel),
		filepath.Dir(vmlinuz), modules, filepath.Dir(image)})
	t.Logf("systemd container booted in %s", time.Since(bootStart).Round(time.Millisecond))
	// The bridge and taps live in the container's network namespace: the
	// host's own links are the same before and after.
	defer func() {
		if after := sysdHostLinks(t); after != hostLinks {
			t.Errorf("the host's links changed while the container ran:\nbefore: %s\nafter:  %s", hostLinks, after)
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), sysdInnerTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append(c.nsenterArgs(), "--", exe,
		"-test.run", "^TestSystemd$", "-test.v", "-test.count=1", "-test.timeout", sysdInnerTimeout.String())...)
	cmd.Env = append(os.Environ(), envSystemdBinDir+"="+binDir, testutil.EnvInNetNS+"=1")
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	t.Logf("run inside the systemd container:\n%s", out)
	if err != nil || !strings.Contains(string(out), "--- PASS: TestSystemd") {
		t.Fatalf("TestSystemd failed inside the systemd container (%v); the container's journal:\n%s", err, c.journal())
	}
}

// sysdHostLinks lists the bridge and tap devices of the test's own
// (the host's) network namespace.
func sysdHostLinks(t *testing.T) string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatalf("list the host's links: %v", err)
	}
	var names []string
	for _, l := range links {
		if typ := l.Type(); typ == "bridge" || typ == "tuntap" {
			names = append(names, typ+":"+l.Attrs().Name)
		}
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

// sysdContainer is a booted systemd-nspawn container: systemd is PID 1 of
// its own pid namespace, over an overlay of the host root, in a private
// network namespace (so every bridge, tap and VM packet stays inside).
type sysdContainer struct {
	t      *testing.T
	dir    string // upper, work and root of the overlay; the nspawn log
	root   string
	leader int // the container's systemd, as the host sees it
}

// sysdBoot makes and boots the container; binds are host paths
// bind-mounted read-only at the same path inside. Cleanup powers it off
// (or kills its pid namespace), unmounts the overlay and removes the
// scratch directory, whatever the test's outcome.
func sysdBoot(t *testing.T, binds []string) *sysdContainer {
	t.Helper()
	dir, err := os.MkdirTemp("", "banger-sysd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &sysdContainer{t: t, dir: dir, root: filepath.Join(dir, "root")}
	mounted := false
	t.Cleanup(func() {
		if mounted {
			if err := unix.Unmount(c.root, 0); err != nil {
				// Busy: detach it, so nothing below is removed through it.
				if err := unix.Unmount(c.root, unix.MNT_DETACH); err != nil {
					t.Errorf("unmount the container's overlay %s: %v (left in place)", c.root, err)
					return
				}
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove the container's directory: %v", err)
		}
	})
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The host root is the lower layer: it has systemd, QEMU and the rest;
	// everything the container writes lands in upper.
	opts := fmt.Sprintf("lowerdir=/,upperdir=%s,workdir=%s", filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
	if err := unix.Mount("overlay", c.root, "overlay", 0, opts); err != nil {
		t.Fatalf("mount the container's overlay (%s): %v", opts, err)
	}
	mounted = true
	if err := sysdPrepareRoot(c.root); err != nil {
		t.Fatal(err)
	}

	logf, err := os.Create(filepath.Join(dir, "nspawn.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := []string{"-D", c.root, "--register=no", "--keep-unit", "--private-network", "-b", "--console=pipe",
		"--machine=banger-sysd", "--bind=/dev/net/tun"}
	for _, b := range sysdTopDirs(binds) {
		args = append(args, "--bind-ro="+b)
	}
	nspawn := exec.Command("systemd-nspawn", args...)
	nspawn.Stdin, nspawn.Stdout, nspawn.Stderr = nil, logf, logf
	if err := nspawn.Start(); err != nil {
		t.Fatalf("start systemd-nspawn: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = nspawn.Wait(); close(done) }()
	t.Cleanup(func() { c.stop(nspawn.Process, done) })

	deadline := time.Now().Add(sysdBootTimeout)
	for c.leader == 0 {
		select {
		case <-done:
			t.Fatalf("systemd-nspawn exited before the container booted:\n%s", readFile(logf.Name()))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd-nspawn started no container in %s:\n%s", sysdBootTimeout, readFile(logf.Name()))
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", nspawn.Process.Pid, nspawn.Process.Pid))
		if f := strings.Fields(string(b)); len(f) > 0 {
			c.leader, _ = strconv.Atoi(f[0])
		}
	}
	// Booted means systemd reached its default target: "running", or
	// "degraded" when some unit failed (listed in the log).
	for {
		out, _ := c.exec(10*time.Second, "systemctl", "is-system-running")
		state := strings.TrimSpace(out)
		if state == "running" || state == "degraded" {
			if state == "degraded" {
				failed, _ := c.exec(10*time.Second, "systemctl", "--failed", "--no-legend")
				t.Logf("systemd container degraded; failed units:\n%s", failed)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd in the container not up after %s (state %q):\n%s", sysdBootTimeout, state, readFile(logf.Name()))
		}
		select {
		case <-done:
			t.Fatalf("systemd-nspawn exited while the container booted:\n%s", readFile(logf.Name()))
		case <-time.After(250 * time.Millisecond):
		}
	}
	return c
}

// sysdPrepareRoot writes, through the overlay, what makes the host's root
// a container: its own machine id and hostname, and the host's own enabled
// services and timers masked (a database, fstrim, apt timers... have no
// business there).
func sysdPrepareRoot(root string) error {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "etc/machine-id"), []byte(hex.EncodeToString(id)+"\n"), 0o444); err != nil {
		return fmt.Errorf("container machine id: %w", err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("banger-sysd\n"), 0o644); err != nil {
		return fmt.Errorf("container hostname: %w", err)
	}
	wants, _ := filepath.Glob("/etc/systemd/system/*.wants/*")
	unitDir := filepath.Join(root, "etc/systemd/system")
	for _, w := range wants {
		name := filepath.Base(w)
		if !strings.HasSuffix(name, ".service") && !strings.HasSuffix(name, ".timer") {
			continue
		}
		p := filepath.Join(unitDir, name)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("mask %s in the container: %w", name, err)
		}
		if err := os.Symlink("/dev/null", p); err != nil {
			return fmt.Errorf("mask %s in the container: %w", name, err)
		}
	}
	return nil
}

// sysdTopDirs drops duplicates and paths below another one of the list.
func sysdTopDirs(dirs []string) []string {
	var out []string
	for i, d := range dirs {
		d = filepath.Clean(d)
		covered := false
		for j, o := range dirs {
			o = filepath.Clean(o)
			if (o == d && j < i) || (o != d && strings.HasPrefix(d, o+"/")) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, d)
		}
	}
	return out
}

func (c *sysdContainer) nsenterArgs() []string {
	return []string{"-t", strconv.Itoa(c.leader), "-m", "-u", "-i", "-n", "-p"}
}

// exec runs a command inside the container, bounded by timeout.
func (c *sysdContainer) exec(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append(append(c.nsenterArgs(), "--"), args...)...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *sysdContainer) journal() string {
	out, err := c.exec(30*time.Second, "journalctl", "--no-pager", "-n", "300", "-u", updater.DaemonUnit, "-u", updater.HelperUnit)
	if err != nil {
		return fmt.Sprintf("(journalctl: %v)\n%s", err, out)
	}
	return out
}

// stop powers the container off (SIGTERM to nspawn asks its systemd to
// shut down); if that does not end it in time, killing its PID 1 takes
// down the whole pid namespace, QEMU included.
func (c *sysdContainer) stop(p *os.Process, done <-chan struct{}) {
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return
	case <-time.After(sysdStopTimeout):
	}
	c.t.Errorf("the systemd container did not power off within %s: killing it", sysdStopTimeout)
	if c.leader > 0 {
		_ = syscall.Kill(c.leader, syscall.SIGKILL)
	}
	_ = p.Kill()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.t.Errorf("systemd-nspawn (pid %d) still running after SIGKILL", p.Pid)
	}
}

// sysdInside is TestSystemd's body inside the container, as root, in the
// container's pid, mount and network namespaces.
func sysdInside(t *testing.T) {
	if b, err := os.ReadFile("/proc/1/comm"); err != nil || strings.TrimSpace(string(b)) != "systemd" {
		t.Fatalf("PID 1 is %q (%v), want systemd", b, err)
	}
	if !dirExists("/run/systemd/system") {
		t.Fatal("/run/systemd/system is missing: systemd does not run this container")
	}
	uid, _ := ensureTestUser(t, smokeOwner)
	s := &sysInstall{t: t, root: "/", sys: paths.System{Root: "/"}, rel: releases(t), systemd: true}

	// `system install` must leave both units enabled and running and the
	// daemon answering: nothing else starts it.
	out, errOut, code := s.runBin(filepath.Join(binDir, "banger"), "system", "install", "--owner", smokeOwner)
	if code != 0 || !strings.Contains(out, "enabled and started "+updater.HelperUnit+" and "+updater.DaemonUnit) {
		t.Fatalf("system install: exit %d\n%s%s\njournal:\n%s", code, out, errOut, sysdJournal())
	}
	for _, u := range []string{updater.HelperUnit, updater.DaemonUnit} {
		if st := unitProp(t, u, "UnitFileState"); st != "enabled" {
			t.Fatalf("%s is %q after system install, want enabled", u, st)
		}
	}
	installed := s.meta()
	daemonPID := s.daemonPID()
	if daemonPID != unitMainPID(t, updater.DaemonUnit) || procUID(t, daemonPID) != int(uid) {
		t.Fatalf("daemon pid %d: want %s's main pid %d, running as the owner (uid %d)",
			daemonPID, updater.DaemonUnit, unitMainPID(t, updater.DaemonUnit), uid)
	}
	helper := s.helperPID()
	if helper == 0 || procUID(t, helper) != 0 {
		t.Fatalf("root helper: %s main pid %d", updater.HelperUnit, helper)
	}
	// The helper's socket, made by the unit's root process: in root's
	// /run/banger, handed to the owner alone.
	var st unix.Stat_t
	if err := unix.Lstat(s.sys.HelperSocket(), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK ||
		st.Uid != uid || st.Mode&0o777 != 0o600 {
		t.Fatalf("helper socket %s: %v, mode %o uid %d; want a socket, 0600, owned by uid %d", s.sys.HelperSocket(), err, st.Mode, st.Uid, uid)
	}
	if err := unix.Lstat(filepath.Dir(s.sys.HelperSocket()), &st); err != nil || st.Uid != 0 || st.Mode&0o022 != 0 {
		t.Fatalf("%s: %v, mode %o uid %d; want root's, writable by root alone", filepath.Dir(s.sys.HelperSocket()), err, st.Mode, st.Uid)
	}
	if c, ok := s.journalDoctor()["root helper"]; !ok || c.Status != "ok" || !strings.Contains(c.Detail, fmt.Sprintf("pid %d,", helper)) {
		t.Fatalf("doctor's root helper check: %+v, want ok with pid %d", c, helper)
	}

	// The owner daemon reads what it imports: copies it may read, in the
	// container's own overlay.
	vm, guestBoot := s.bootSmokeVM("/var/tmp/banger-sysd-fixtures")
	t.Logf("VMM pid %d cgroups:\n%s", vm.PID, readFile(fmt.Sprintf("/proc/%d/cgroup", vm.PID)))
	// The helper moved QEMU into a transient scope of its own, out of
	// bangerd.service's cgroup and so out of every unit's kill path.
	if cg := readFile(fmt.Sprintf("/proc/%d/cgroup", vm.PID)); !strings.Contains(cg, "banger-vm-") || strings.Contains(cg, "bangerd.service") {
		t.Fatalf("VMM pid %d is not in a banger-vm-*.scope of its own:\n%s", vm.PID, cg)
	}

	t.Run("update_keeps_vm_alive", func(t *testing.T) {
		s.t = t
		requireVMMAlive(t, vm.PID, "an earlier step")
		updateToGood(t, s, installed)
		s.requireSameVM(vm, guestBoot)
	})
	t.Run("update_rollback_keeps_vm_alive", func(t *testing.T) {
		s.t = t
		requireVMMAlive(t, vm.PID, "an earlier step")
		updateToBrokenRollsBack(t, s)
		s.requireSameVM(vm, guestBoot)
	})
	t.Run("systemctl_stop_bangerd_keeps_vm_alive", func(t *testing.T) {
		s.t = t
		requireVMMAlive(t, vm.PID, "an earlier step")
		pid := s.daemonPID()
		systemctl(t, "stop", updater.DaemonUnit)
		if st := unitProp(t, updater.DaemonUnit, "ActiveState"); st != "inactive" {
			t.Fatalf("%s is %s after systemctl stop, want inactive", updater.DaemonUnit, st)
		}
		if processAlive(pid) {
			t.Fatalf("daemon pid %d still alive after systemctl stop", pid)
		}
		requireVMMAlive(t, vm.PID, "systemctl stop "+updater.DaemonUnit)
		systemctl(t, "start", updater.DaemonUnit)
		s.waitDaemon()
		s.requireSameVM(vm, guestBoot)
	})
	// The kill path: the daemon dies by SIGKILL (a crash, the OOM killer);
	// Restart=on-failure brings it back, and with KillMode=process the
	// failed unit's stop leaves the VMM alone, to be re-adopted.
	t.Run("bangerd_sigkill_restarts_keeps_vm_alive", func(t *testing.T) {
		s.t = t
		requireVMMAlive(t, vm.PID, "an earlier step")
		pid := unitMainPID(t, updater.DaemonUnit)
		if pid == 0 {
			t.Fatalf("%s has no main pid", updater.DaemonUnit)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill the daemon: %v", err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			if p := unitMainPID(t, updater.DaemonUnit); p != 0 && p != pid {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("systemd did not restart %s within 30 s of its SIGKILL\njournal:\n%s", updater.DaemonUnit, sysdJournal())
			}
			time.Sleep(200 * time.Millisecond)
		}
		requireVMMAlive(t, vm.PID, "SIGKILL of the daemon and systemd's restart")
		s.waitDaemon()
		if n := unitProp(t, updater.DaemonUnit, "NRestarts"); n == "0" {
			t.Fatalf("%s restarted, yet NRestarts is 0", updater.DaemonUnit)
		}
		s.requireSameVM(vm, guestBoot)
	})
	t.Run("systemctl_restart_bangerd_root_keeps_vm_alive", func(t *testing.T) {
		s.t = t
		requireVMMAlive(t, vm.PID, "an earlier step")
		old := s.helperPID()
		systemctl(t, "restart", updater.HelperUnit)
		helper := s.helperPID()
		if helper == 0 || helper == old || processAlive(old) {
			t.Fatalf("root helper not restarted (pid %d, old %d alive: %v)", helper, old, processAlive(old))
		}
		requireVMMAlive(t, vm.PID, "systemctl restart "+updater.HelperUnit)
		s.requireSameVM(vm, guestBoot)
		if c := s.journalDoctor()["root helper"]; c.Status != "ok" || !strings.Contains(c.Detail, fmt.Sprintf("pid %d,", helper)) {
			t.Fatalf("doctor's root helper check after the restart: %+v, want ok with pid %d", c, helper)
		}
	})
}

// bootSmokeVM copies the fixtures into fix (world-readable: the owner
// daemon reads what it imports), imports them and boots the VM "smoke" a
// test keeps alive across what it does to the install; it returns the VM
// and its guest kernel's boot_id (which changes if the guest reboots), with
// the guest's SSH host key pinned.
func (s *sysInstall) bootSmokeVM(fix string) (model.VM, string) {
	t := s.t
	t.Helper()
	vmlinuz, modules := testutil.Kernel(t)
	image := testutil.Image(t)
	if err := os.MkdirAll(fix, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"cp", "--sparse=always", vmlinuz, filepath.Join(fix, "vmlinuz")},
		{"cp", "-a", modules, filepath.Join(fix, "modules")},
		{"cp", "--sparse=always", image, filepath.Join(fix, "rootfs.ext4")},
		{"chmod", "-R", "a+rX", fix},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	s.ok("kernel", "import", "smoke-kernel", filepath.Join(fix, "vmlinuz"), "--modules", filepath.Join(fix, "modules"))
	s.ok("image", "import", "smoke-image", filepath.Join(fix, "rootfs.ext4"))
	s.ok("vm", "create", "--start", "--name", "smoke", "--kernel", "smoke-kernel", "--image", "smoke-image", "--memory", "512M")
	vm := s.inspect("smoke")
	if vm.BootID == "" || vm.PID <= 0 || !processAlive(vm.PID) {
		t.Fatalf("booted VM: %+v", vm)
	}
	guestBoot := strings.TrimSpace(s.ok("vm", "exec", "smoke", "--", "cat", "/proc/sys/kernel/random/boot_id"))
	s.ok("vm", "ssh", "smoke", "--", "true")
	return vm, guestBoot
}

// requireVMMAlive fails, saying where the VMM lived, when what just ran
// killed it.
func requireVMMAlive(t *testing.T, pid int, what string) {
	t.Helper()
	if processAlive(pid) {
		return
	}
	t.Fatalf("%s killed the VM's QEMU (pid %d); its cgroups before were logged above: a VMM inside a banger unit's cgroup dies with it", what, pid)
}

// waitDaemon waits (bounded) until the started daemon answers.
func (s *sysInstall) waitDaemon() {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, errOut, code := s.banger("daemon", "status")
		if code == 0 {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("daemon not answering 30 s after systemctl start: %s\njournal:\n%s", errOut, sysdJournal())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func systemctl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("systemctl %s: %v\n%s\njournal:\n%s", strings.Join(args, " "), err, out, sysdJournal())
	}
	return string(out)
}

func unitProp(t *testing.T, unit, prop string) string {
	t.Helper()
	return strings.TrimSpace(systemctl(t, "show", "--property", prop, "--value", unit))
}

// unitMainPID is the unit's main pid as systemd sees it, 0 when it has none.
func unitMainPID(t *testing.T, unit string) int {
	t.Helper()
	pid, err := strconv.Atoi(unitProp(t, unit, "MainPID"))
	if err != nil {
		t.Fatalf("MainPID of %s: %v", unit, err)
	}
	return pid
}

func sysdJournal() string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "journalctl", "--no-pager", "-n", "200", "-u", updater.DaemonUnit, "-u", updater.HelperUnit)
	cmd.Stdout, cmd.Stderr = &out, &out
	_ = cmd.Run()
	return out.String()
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
