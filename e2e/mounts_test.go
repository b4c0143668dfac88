package e2e

import (
	"bytes"
	"context"
	"encoding/json"
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

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
	"github.com/bangerdev/banger/internal/vmm"
	"golang.org/x/sys/unix"
)

// Shared directories (virtio-fs). The daemon runs as a real second uid
// (banger-e2e-mount), so "owner" is not root: files a root guest creates
// must land on the host owned by that uid, and the guest must reach nothing
// outside the shared directory, even what the owner itself could read.

const mountOwner = "banger-e2e-mount"

// mountEnv is a banger whose daemon runs as the owner uid, with a real root
// helper for that uid (taps), the test kernel and image imported.
type mountEnv struct {
	t        testing.TB
	in       *instance
	uid, gid uint32
	base     string // 0755, root-owned: shares and sentinels live here
	sys      paths.System
	timeout  time.Duration // per banger command; default 3 minutes
}

func mountSetup(t testing.TB) *mountEnv {
	t.Helper()
	testutil.RequireQEMU(t)
	testutil.RequireBinary(t, "/usr/lib/qemu/virtiofsd")
	kernel, modules := testutil.Kernel(t)
	image := testutil.Image(t)
	uid, gid := ensureTestUser(t, mountOwner)
	base, err := os.MkdirTemp("", "banger-mount-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	// A system-install layout under base: the helper's socket directory
	// is root-owned (the helper insists), the owner's home is its own.
	e := &mountEnv{t: t, uid: uid, gid: gid, base: base, sys: paths.System{Root: filepath.Join(base, "sys")}}
	home := e.sys.Home()
	for _, d := range []string{filepath.Dir(home), e.sys.RunDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.mkdirOwned(home, 0o700)
	e.in = newInstanceFromHome(t, home)
	// The fixtures sit under root's home: hard links in a directory the
	// owner can read (same file system, no copy).
	fix := filepath.Join(base, "fixtures")
	if out, err := exec.Command("sh", "-ec", `mkdir -p "$1" && cp -al "$2" "$1/vmlinuz" && cp -al "$3" "$1/modules" && cp -al "$4" "$1/rootfs.ext4" && chmod -R a+rX "$1"`,
		"sh", fix, kernel, modules, image).CombinedOutput(); err != nil {
		t.Fatalf("link fixtures: %v\n%s", err, out)
	}
	e.ok("", "daemon", "start")
	t.Cleanup(func() {
		var l api.VMList
		if out, _, code := e.run("", "vm", "ls", "--json"); code == 0 && json.Unmarshal([]byte(out), &l) == nil {
			for _, vm := range l.VMs {
				e.run("", "vm", "rm", "-f", vm.Name)
			}
		}
		e.run("", "daemon", "stop")
		if t.Failed() {
			t.Logf("daemon log:\n%s", readFile(e.in.p.DaemonLog()))
		}
	})
	e.startHelper()
	e.ok("", "kernel", "import", "debian-cloud", filepath.Join(fix, "vmlinuz"), "--modules", filepath.Join(fix, "modules"))
	e.ok("", "image", "import", "debian-bookworm", filepath.Join(fix, "rootfs.ext4"))
	return e
}

// startHelper runs a real root helper for the owner on the socket its
// daemon dials (as a system install's bangerd-root.service would).
func (e *mountEnv) startHelper() {
	t := e.t
	logf, err := os.Create(filepath.Join(e.base, "helper.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(binDir, "bangerd"), "--root-helper", "--owner-uid", strconv.Itoa(int(e.uid)), "--socket", e.sys.HelperSocket())
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "BANGER_HOME="+e.in.home, paths.EnvSystemRoot+"="+e.sys.Root)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("helper log:\n%s", mountTail(readFile(logf.Name()), 30))
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	ping := func() error {
		_, err := rpc.Invoke(context.Background(), rpc.NewClient(e.sys.HelperSocket()), api.MethodHelperPing, api.Empty{})
		return err
	}
	for ping() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("the root helper did not answer on %s", e.sys.HelperSocket())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *mountEnv) cred() *syscall.Credential { return &syscall.Credential{Uid: e.uid, Gid: e.gid} }

// run runs banger as the owner in dir ("" is the base directory).
func (e *mountEnv) run(dir string, args ...string) (string, string, int) {
	e.t.Helper()
	timeout := e.timeout
	if timeout == 0 {
		timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "banger"), args...)
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=" + e.in.home,
		"BANGER_HOME=" + e.in.home, paths.EnvSystemRoot + "=" + e.sys.Root, "BANGER_DAEMON_BIN=" + filepath.Join(binDir, "bangerd")}
	if dir == "" {
		dir = e.base
	}
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: e.cred()}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			e.t.Fatalf("run banger %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return stdout.String(), stderr.String(), code
}

func (e *mountEnv) ok(dir string, args ...string) string {
	e.t.Helper()
	out, errOut, code := e.run(dir, args...)
	if code != 0 {
		e.t.Fatalf("banger %s: exit %d\nstdout: %s\nstderr: %s\ndaemon log (tail):\n%s", strings.Join(args, " "), code, out, errOut, mountTail(readFile(e.in.p.DaemonLog()), 40))
	}
	return out
}

// guest runs a shell script in the VM as root and returns stdout, stderr
// and the exit code.
func (e *mountEnv) guest(vm, script string) (string, string, int) {
	e.t.Helper()
	return e.run("", "vm", "exec", vm, "--", "sh", "-c", script)
}

func (e *mountEnv) mkdirOwned(p string, mode os.FileMode) {
	e.t.Helper()
	if err := os.MkdirAll(p, mode); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Chown(p, int(e.uid), int(e.gid)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *mountEnv) writeOwned(p, content string, mode os.FileMode) {
	e.t.Helper()
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Chown(p, int(e.uid), int(e.gid)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *mountEnv) inspect(name string) model.VM {
	e.t.Helper()
	var vm model.VM
	if err := json.Unmarshal([]byte(e.ok("", "vm", "inspect", name, "--json")), &vm); err != nil {
		e.t.Fatal(err)
	}
	return vm
}

// helpers reads the recorded virtiofsd processes of a running VM.
func (e *mountEnv) helpers(vm model.VM) []vmm.Helper {
	e.t.Helper()
	var inst vmm.Instance
	b, err := os.ReadFile(filepath.Join(vm.Dir, "instance.json"))
	if err != nil {
		e.t.Fatalf("read instance of %s: %v", vm.Name, err)
	}
	if err := json.Unmarshal(b, &inst); err != nil {
		e.t.Fatal(err)
	}
	return inst.Helpers
}

// ownerProcesses lists the pids and command names of every process the
// owner uid runs.
func (e *mountEnv) ownerProcesses() []string {
	e.t.Helper()
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		st, err := os.Stat("/proc/" + d.Name())
		if err != nil || st.Sys().(*syscall.Stat_t).Uid != e.uid {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		out = append(out, fmt.Sprintf("%d:%s", pid, strings.TrimSpace(string(comm))))
	}
	sort.Strings(out)
	return out
}

// vmProcesses are the owner's qemu and virtiofsd processes.
func (e *mountEnv) vmProcesses() []string {
	var out []string
	for _, p := range e.ownerProcesses() {
		if strings.Contains(p, "qemu") || strings.Contains(p, "virtiofsd") || strings.Contains(p, "bangerd") && !strings.HasSuffix(p, ":bangerd") {
			out = append(out, p)
		}
	}
	return out
}

func mountProcUIDs(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "gone"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Uid:") {
			return strings.Join(strings.Fields(l)[1:], " ")
		}
	}
	return "?"
}

func mountTail(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func mountFileOwner(t *testing.T, p string) (uint32, uint32) {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Fatalf("stat %s: %v", p, err)
	}
	s := st.Sys().(*syscall.Stat_t)
	return s.Uid, s.Gid
}

func mountWaitGone(t *testing.T, what string, d time.Duration, cond func() []string) {
	t.Helper()
	deadline := time.Now().Add(d)
	var left []string
	for time.Now().Before(deadline) {
		if left = cond(); len(left) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: still there after %s: %v", what, d, left)
}

// TestMountReadWriteAndReadOnly: a rw share carries the guest's writes (its
// root's and a uid 1000's) to the host owned by the owner (not root, not
// another uid) and the host's edits to the
// guest; a ro share refuses writes with EROFS even after the guest root
// remounts it rw; inspect and ls show the mounts; suspend is refused; the
// virtiofsd processes run as the owner and end with the VM (stop, crash,
// rm).
func TestMountReadWriteAndReadOnly(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	e := mountSetup(t)
	rw := filepath.Join(e.base, "rw")
	ro := filepath.Join(e.base, "ro")
	e.mkdirOwned(rw, 0o755)
	e.mkdirOwned(ro, 0o755)
	e.writeOwned(filepath.Join(ro, "keep.txt"), "read-only content\n", 0o644)
	roBefore := hostileOwnerSnapshot(t, ro, filepath.Join(ro, "keep.txt"))

	e.ok("", "vm", "create", "--name", "mnt", "--memory", "512M", "--mount", rw+":/mnt/rw", "--mount", ro+":/mnt/ro:ro", "--start")
	vm := e.inspect("mnt")
	want := []model.Mount{{Source: rw, Target: "/mnt/rw", Tag: "banger0"}, {Source: ro, Target: "/mnt/ro", ReadOnly: true, Tag: "banger1"}}
	if fmt.Sprint(vm.Mounts) != fmt.Sprint(want) {
		t.Fatalf("inspect mounts = %+v, want %+v", vm.Mounts, want)
	}
	var l api.VMList
	if err := json.Unmarshal([]byte(e.ok("", "vm", "ls", "--json")), &l); err != nil || len(l.VMs) != 1 || fmt.Sprint(l.VMs[0].Mounts) != fmt.Sprint(want) {
		t.Fatalf("vm ls --json mounts = %+v (%v), want %+v", l.VMs, err, want)
	}

	// virtiofsd runs as the owner, never root.
	hs := e.helpers(vm)
	if len(hs) != 2 {
		t.Fatalf("recorded helpers = %+v, want two virtiofsd", hs)
	}
	for _, h := range hs {
		want := fmt.Sprintf("%d %d %d %d", e.uid, e.uid, e.uid, e.uid)
		if got := mountProcUIDs(t, h.PID); got != want {
			ps, _ := exec.Command("ps", "-eo", "pid,ppid,user,stat,args").CombinedOutput()
			t.Fatalf("%s (pid %d) runs with uids %q, want the owner's %q\n%s\nvirtiofsd log: %s", h.Name, h.PID, got, want, ps, readFile(filepath.Join(vm.Dir, "virtiofsd-"+strings.TrimPrefix(h.Name, "virtiofsd:")+".log")))
		}
	}

	// rw: the guest (root) writes; the host sees the owner's file.
	out, errOut, code := e.guest("mnt", `id -u && printf 'written by the guest\n' > /mnt/rw/from-guest && mkdir /mnt/rw/gdir && echo in-dir > /mnt/rw/gdir/f && stat -c '%u' /mnt/rw/from-guest`)
	if code != 0 || !strings.HasPrefix(out, "0\n") {
		t.Fatalf("guest write: exit %d, out %q, err %q", code, out, errOut)
	}
	for _, p := range []string{"from-guest", "gdir", "gdir/f"} {
		if u, g := mountFileOwner(t, filepath.Join(rw, p)); u != e.uid || g != e.gid {
			t.Errorf("host sees %s owned by %d:%d, want the owner %d:%d", p, u, g, e.uid, e.gid)
		}
	}
	if got := readFile(filepath.Join(rw, "from-guest")); got != "written by the guest\n" {
		t.Errorf("host reads %q from the guest's file", got)
	}
	// The host edits; the guest sees it.
	e.writeOwned(filepath.Join(rw, "from-host"), "edited on the host\n", 0o644)
	if out, errOut, code := e.guest("mnt", "cat /mnt/rw/from-host"); code != 0 || out != "edited on the host\n" {
		t.Errorf("guest reads host edit: exit %d, %q, %q", code, out, errOut)
	}
	// A guest chown to a uid the owner does not have fails: no file lands
	// on the host owned by anyone but the owner.
	if _, _, code := e.guest("mnt", "chown 1234:1234 /mnt/rw/from-guest"); code == 0 {
		t.Errorf("guest chown to uid 1234 succeeded")
	}
	if u, _ := mountFileOwner(t, filepath.Join(rw, "from-guest")); u != e.uid {
		t.Errorf("after guest chown the host file is owned by %d", u)
	}

	// A guest user other than root (uid 1000; setpriv needs no passwd
	// entry): what it creates is the owner's on the host too, never root's
	// nor another uid's, and nothing outside the share changes. In the
	// guest the owner is uid 0, so its files show as root's: with umask 0
	// it can write them again. Its own permissions still hold (no write in
	// the root-owned share root), and a guest chown to it stays refused.
	outside := []string{e.base, ro, filepath.Join(ro, "keep.txt"), e.sys.Root, "/etc/passwd", "/etc/group"}
	outsideBefore := hostileOwnerSnapshot(t, outside...)
	out, errOut, code = e.guest("mnt", `set -e
mkdir /mnt/rw/u1000 && chmod 1777 /mnt/rw/u1000
setpriv --reuid 1000 --regid 1000 --clear-groups sh -ec '
  cd /mnt/rw/u1000
  echo by-1000 > f; mkdir d
  umask 000; mkdir d2; echo in-d2 > d2/g; echo more >> d2/g
  cat f d2/g
  if echo x > ../from-1000 2>/dev/null; then echo "uid 1000 wrote in the share root"; exit 1; fi
'
stat -c %u:%g /mnt/rw/u1000/f
if chown 1000:1000 /mnt/rw/u1000/f 2>/dev/null; then echo "chown to 1000 worked"; exit 1; fi`)
	if code != 0 || out != "by-1000\nin-d2\nmore\n0:0\n" {
		t.Errorf("guest uid 1000 in the share: exit %d, out %q, err %q", code, out, errOut)
	}
	for _, p := range []string{"u1000", "u1000/f", "u1000/d", "u1000/d2", "u1000/d2/g"} {
		if u, g := mountFileOwner(t, filepath.Join(rw, p)); u != e.uid || g != e.gid {
			t.Errorf("host sees %s (made by guest uid 1000) owned by %d:%d, want the owner %d:%d", p, u, g, e.uid, e.gid)
		}
	}
	if got := readFile(filepath.Join(rw, "u1000/d2/g")); got != "in-d2\nmore\n" {
		t.Errorf("host reads %q from guest uid 1000's file", got)
	}
	if _, err := os.Lstat(filepath.Join(rw, "from-1000")); !os.IsNotExist(err) {
		t.Errorf("guest uid 1000 created a file in the root-owned share root (%v)", err)
	}
	if after := hostileOwnerSnapshot(t, outside...); after != outsideBefore {
		t.Errorf("outside the share changed:\nbefore %s\nafter  %s", outsideBefore, after)
	}

	// ro: writes fail with EROFS, and stay failing after a remount rw.
	_, errOut, code = e.guest("mnt", "echo x > /mnt/ro/new")
	if code == 0 || !strings.Contains(errOut, "Read-only file system") {
		t.Errorf("write to ro share: exit %d, stderr %q; want EROFS", code, errOut)
	}
	out, errOut, code = e.guest("mnt", "mount -o remount,rw /mnt/ro; echo x > /mnt/ro/new2; echo y >> /mnt/ro/keep.txt; rm -f /mnt/ro/keep.txt; true")
	if !strings.Contains(errOut, "Read-only file system") {
		t.Errorf("writes after remount rw: out %q, stderr %q; want EROFS", out, errOut)
	}
	if after := hostileOwnerSnapshot(t, ro, filepath.Join(ro, "keep.txt")); after != roBefore {
		t.Errorf("ro share changed on the host:\nbefore %s\nafter  %s", roBefore, after)
	}

	// Suspend is refused, saying why; the VM keeps running.
	_, errOut, code = e.run("", "vm", "suspend", "mnt")
	if code == 0 || !strings.Contains(errOut, "shares host directories") {
		t.Errorf("vm suspend: exit %d, stderr %q; want a refusal naming the shares", code, errOut)
	}
	if st := e.inspect("mnt").State; st != model.StateRunning {
		t.Fatalf("after refused suspend the vm is %s", st)
	}
	// So are a snapshot and a fork, which save the same state.
	for _, args := range [][]string{{"vm", "snapshot", "mnt", "--as", "mnt-snap"}, {"vm", "fork", "mnt"}} {
		_, errOut, code = e.run("", args...)
		if code == 0 || !strings.Contains(errOut, "shares host directories") {
			t.Errorf("banger %s: exit %d, stderr %q; want a refusal naming the shares", strings.Join(args, " "), code, errOut)
		}
	}
	if st := e.inspect("mnt").State; st != model.StateRunning {
		t.Fatalf("after refused snapshot the vm is %s", st)
	}
	if out, _, _ := e.run("", "snapshot", "ls", "--json"); strings.Contains(out, "mnt") {
		t.Errorf("a refused snapshot left a record: %s", out)
	}

	// Stop: virtiofsd and sockets go.
	e.ok("", "vm", "stop", "mnt")
	mountWaitGone(t, "processes after stop", 15*time.Second, e.vmProcesses)
	if m, _ := filepath.Glob(filepath.Join(vm.Dir, "fs-*.sock")); len(m) != 0 {
		t.Errorf("share sockets left after stop: %v", m)
	}

	// Crash: QEMU killed behind the daemon's back; virtiofsd goes too.
	e.ok("", "vm", "start", "mnt")
	vm = e.inspect("mnt")
	hs = e.helpers(vm)
	if len(hs) != 2 {
		t.Fatalf("helpers after restart = %+v", hs)
	}
	if err := syscall.Kill(vm.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	mountWaitGone(t, "virtiofsd after qemu crash", 15*time.Second, func() []string {
		var left []string
		for _, h := range hs {
			if ok, _ := vmm.ProcessAlive(h.PID, h.PIDStartTime); ok {
				left = append(left, h.Name)
			}
		}
		return left
	})

	// rm of a running VM: nothing of it left.
	waitFor(t, 15*time.Second, "vm marked errored after its qemu was killed", func() (bool, string) {
		st := e.inspect("mnt").State
		return st != model.StateRunning, string(st)
	})
	e.ok("", "vm", "start", "mnt")
	e.ok("", "vm", "rm", "-f", "mnt")
	mountWaitGone(t, "processes after rm", 15*time.Second, e.vmProcesses)
	if got := readFile(filepath.Join(rw, "from-guest")); got != "written by the guest\n" {
		t.Errorf("rw share content after rm: %q", got)
	}
}

// TestMountRefusesUnreadableDir: a directory the owner cannot read (or,
// for rw, write) is refused before anything is made, with an error saying
// what to do; the same check runs before each start, and nothing is left
// running.
func TestMountRefusesUnreadableDir(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	e := mountSetup(t)
	rootOnly := filepath.Join(e.base, "root-only")
	if err := os.Mkdir(rootOnly, 0o700); err != nil {
		t.Fatal(err)
	}
	readOnly := filepath.Join(e.base, "root-readable")
	if err := os.Mkdir(readOnly, 0o755); err != nil {
		t.Fatal(err)
	}
	before := e.vmProcesses()
	_, errOut, code := e.run("", "vm", "run", "--name", "bad", "--mount", rootOnly, "--", "true")
	if code == 0 || !strings.Contains(errOut, "not readable by you") {
		t.Fatalf("unreadable dir: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = e.run("", "vm", "create", "--name", "bad", "--mount", readOnly)
	if code == 0 || !strings.Contains(errOut, "not writable by you") || !strings.Contains(errOut, ":ro") {
		t.Fatalf("unwritable dir shared rw: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = e.run("", "vm", "create", "--name", "bad", "--mount", filepath.Join(e.base, "missing"))
	if code == 0 || !strings.Contains(errOut, "no such file") {
		t.Fatalf("missing dir: exit %d, stderr %q", code, errOut)
	}
	if out := e.ok("", "vm", "ls", "--json"); strings.Contains(out, `"bad"`) {
		t.Fatalf("a refused vm was recorded: %s", out)
	}
	if ents, _ := os.ReadDir(e.in.p.VMsDir()); len(ents) != 0 {
		t.Fatalf("vm dirs left after refusals: %v", ents)
	}

	// Readable at create, unreadable at start: refused before any process.
	later := filepath.Join(e.base, "later")
	e.mkdirOwned(later, 0o755)
	e.ok("", "vm", "create", "--name", "later", "--memory", "512M", "--mount", later+":/work")
	if err := os.Chmod(later, 0o000); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = e.run("", "vm", "start", "later")
	if code == 0 || !strings.Contains(errOut, "not readable by you") {
		t.Fatalf("start with a dir gone unreadable: exit %d, stderr %q", code, errOut)
	}
	if got := e.vmProcesses(); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatalf("processes left after refusals: %v (before: %v)", got, before)
	}
}

// TestMountEscapeAttempts: a root guest attacks its share: symlinks the
// host planted pointing out (absolute, relative, to a directory), "..",
// the host's own paths, its own symlinks out, hard links, device nodes,
// set-uid and capability bits, and forged file handles (open_by_handle_at
// over node ids and the host inode numbers). The file next to the share
// is the owner's own (the owner could read it): the share still must not
// expose it. On the host, nothing outside the share changed (hash, mode,
// owner) and the secret never reached the guest.
func TestMountEscapeAttempts(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	e := mountSetup(t)
	share := filepath.Join(e.base, "share")
	outside := filepath.Join(e.base, "outside")
	e.mkdirOwned(share, 0o755)
	e.mkdirOwned(outside, 0o755)
	const marker = "TOP-SECRET-7f3a9c"
	secret := filepath.Join(outside, "secret")
	sentinel := filepath.Join(outside, "sentinel")
	e.writeOwned(secret, marker+"\n", 0o600)
	e.writeOwned(sentinel, "sentinel: must not change\n", 0o644)
	e.writeOwned(filepath.Join(share, "inside.txt"), "inside the share\n", 0o644)
	for name, target := range map[string]string{"abs-link": secret, "rel-link": "../outside/secret", "dir-link": outside} {
		if err := os.Symlink(target, filepath.Join(share, name)); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(filepath.Join(share, name), int(e.uid), int(e.gid)); err != nil {
			t.Fatal(err)
		}
	}
	attack := filepath.Join(share, "mountattack")
	build := exec.Command("go", "build", "-o", attack, "./testdata/mountattack")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the attacker: %v\n%s", err, out)
	}
	if err := os.Chown(attack, int(e.uid), int(e.gid)); err != nil {
		t.Fatal(err)
	}
	watched := []string{e.base, outside, secret, sentinel, e.sys.Root, "/etc/passwd", "/etc/shadow"}
	before := hostileOwnerSnapshot(t, watched...)
	var inos []string
	for _, p := range []string{secret, sentinel, outside, e.base} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		inos = append(inos, strconv.FormatUint(st.Sys().(*syscall.Stat_t).Ino, 10))
	}

	e.ok("", "vm", "create", "--name", "esc", "--memory", "512M", "--mount", share+":/mnt/s", "--start")
	out, errOut, code := e.run("", append([]string{"vm", "exec", "esc", "--", "/mnt/s/mountattack", "/mnt/s", marker, outside}, inos...)...)
	t.Logf("attacker (exit %d):\n%s%s", code, out, errOut)
	if code != 0 || !strings.Contains(out, "attack done") {
		t.Fatalf("attacker did not finish: exit %d\n%s\n%s", code, out, errOut)
	}
	if strings.Contains(out, "LEAK") || strings.Contains(out+errOut, marker) {
		t.Errorf("the guest reached the secret:\n%s", out)
	}
	for _, must := range []string{"refused read through abs-link", "refused read through rel-link", "refused read through dir-link/secret",
		"refused mknod", "refused chown 1000:1000", "refused setxattr security.capability", "refused hardlink guest /etc/passwd"} {
		if !strings.Contains(out, must) {
			t.Errorf("attacker output lacks %q", must)
		}
	}
	// Also from a shell: the planted links, cat'd by a root guest.
	if out, _, _ := e.guest("esc", "cat /mnt/s/abs-link /mnt/s/rel-link /mnt/s/dir-link/secret 2>&1; ls -la /mnt/s/.. 2>&1"); strings.Contains(out, marker) {
		t.Errorf("guest shell read the secret:\n%s", out)
	}
	e.ok("", "vm", "rm", "-f", "esc")

	if after := hostileOwnerSnapshot(t, watched...); after != before {
		t.Errorf("outside the share changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// What the guest made in the share is the owner's, with no device,
	// no root-owned set-uid file and no capability.
	err := filepath.Walk(share, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != e.uid {
			t.Errorf("%s is owned by uid %d, not the owner %d", p, st.Uid, e.uid)
		}
		if fi.Mode()&(os.ModeDevice|os.ModeCharDevice) != 0 {
			t.Errorf("%s is a device node", p)
		}
		if fi.Mode().IsRegular() {
			if n, err := unix.Lgetxattr(p, "security.capability", make([]byte, 64)); err == nil && n > 0 {
				t.Errorf("%s carries a file capability", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestMountWorkspace: --workspace shares the current directory at the same
// path and starts vm run's command and vm exec there (-w still wins); a
// restarted daemon re-adopts the VM with its shares working, and stopping
// it then ends virtiofsd.
func TestMountWorkspace(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	e := mountSetup(t)
	proj := filepath.Join(e.base, "proj")
	e.mkdirOwned(proj, 0o755)
	e.writeOwned(filepath.Join(proj, "README"), "project readme\n", 0o644)

	out := e.ok(proj, "vm", "run", "--rm", "--memory", "512M", "--workspace", "--", "sh", "-c", "pwd; cat README; echo made > made-in-guest")
	if out != proj+"\nproject readme\n" {
		t.Fatalf("vm run --workspace printed %q, want the project path and its readme", out)
	}
	if u, _ := mountFileOwner(t, filepath.Join(proj, "made-in-guest")); u != e.uid {
		t.Fatalf("made-in-guest is owned by %d, want the owner %d", u, e.uid)
	}
	mountWaitGone(t, "processes after vm run --rm", 15*time.Second, e.vmProcesses)

	e.ok(proj, "vm", "create", "--name", "ws", "--memory", "512M", "--workspace", "--start")
	if vm := e.inspect("ws"); vm.Workdir != proj || len(vm.Mounts) != 1 || vm.Mounts[0].Target != proj {
		t.Fatalf("inspect: workdir %q mounts %+v", vm.Workdir, vm.Mounts)
	}
	if out := e.ok("", "vm", "exec", "ws", "--", "pwd"); out != proj+"\n" {
		t.Errorf("vm exec without -w ran in %q, want %q", out, proj)
	}
	if out := e.ok("", "vm", "exec", "ws", "-w", "/", "--", "pwd"); out != "/\n" {
		t.Errorf("vm exec -w / ran in %q", out)
	}

	// Daemon restart: the VM and its virtiofsd keep running and are
	// re-adopted.
	hs := e.helpers(e.inspect("ws"))
	e.ok("", "daemon", "stop")
	e.ok("", "daemon", "start")
	if st := e.inspect("ws").State; st != model.StateRunning {
		t.Fatalf("after daemon restart the vm is %s", st)
	}
	e.writeOwned(filepath.Join(proj, "after-restart"), "still shared\n", 0o644)
	if out := e.ok("", "vm", "exec", "ws", "--", "cat", "after-restart"); out != "still shared\n" {
		t.Errorf("after daemon restart the guest reads %q", out)
	}
	for _, h := range hs {
		if ok, why := vmm.ProcessAlive(h.PID, h.PIDStartTime); !ok {
			t.Errorf("%s after daemon restart: %s", h.Name, why)
		}
	}
	e.ok("", "vm", "stop", "ws")
	mountWaitGone(t, "processes after stop", 15*time.Second, e.vmProcesses)
}
