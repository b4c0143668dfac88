package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
)

// unitCgroup is a scratch cgroup standing in for a service's (bangerd.service)
// in every process-tracking hierarchy: cgroup2 and, on hybrid hosts,
// systemd's named v1 hierarchy.
type unitCgroup struct {
	dirs []string // one per hierarchy
}

func newUnitCgroup(t *testing.T) *unitCgroup {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := &unitCgroup{}
	name := fmt.Sprintf("banger-e2e-unit-%d", os.Getpid())
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, _ := strings.Cut(sc.Text(), " - ")
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 3 || a[3] != "/" {
			continue
		}
		kind := ""
		switch {
		case b[0] == "cgroup2":
			kind = "cgroup2"
		case b[0] == "cgroup" && strings.Contains(","+b[2]+",", ",name=systemd,"):
			kind = "name=systemd"
		default:
			continue
		}
		if seen[kind] {
			continue
		}
		seen[kind] = true
		dir := filepath.Join(a[4], name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		u.dirs = append(u.dirs, dir)
	}
	if len(u.dirs) == 0 {
		t.Fatal("no cgroup2 or name=systemd hierarchy mounted")
	}
	t.Cleanup(func() {
		u.kill(t)
		for _, d := range u.dirs {
			syscall.Rmdir(d)
		}
	})
	return u
}

// add moves pid into the unit's cgroup in every hierarchy.
func (u *unitCgroup) add(t *testing.T, pid int) {
	t.Helper()
	for _, d := range u.dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			t.Fatalf("move %d into %s: %v", pid, d, err)
		}
	}
}

func (u *unitCgroup) procs(t *testing.T) []int {
	t.Helper()
	var out []int
	for _, d := range u.dirs {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// kill does what systemd's final kill of the unit does: every process in
// its cgroup gets SIGKILL (cgroup.kill on cgroup2; pid by pid in the v1
// hierarchy), until the cgroup is empty (bounded).
func (u *unitCgroup) kill(t *testing.T) {
	t.Helper()
	for _, d := range u.dirs {
		if _, err := os.Stat(filepath.Join(d, "cgroup.kill")); err == nil {
			if err := os.WriteFile(filepath.Join(d, "cgroup.kill"), []byte("1"), 0o644); err != nil {
				t.Fatalf("cgroup.kill %s: %v", d, err)
			}
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		pids := u.procs(t)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("unit cgroup still holds %v after the kill", pids)
		}
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestVMSurvivesServiceCgroupKill: the daemon runs in its service's cgroup
// (bangerd.service) and the root helper in its own, as under systemd. A VM's
// QEMU starts in the daemon's cgroup and is moved by the helper into
// banger/vm-<id>; the unit's whole cgroup is then killed as systemd's
// final kill would: the daemon (and a control process left in the unit)
// die, the QEMU lives, and a new daemon re-adopts the VM.
func TestVMSurvivesServiceCgroupKill(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	// The helper as bangerd-root.service runs it: its own process, outside
	// the daemon's unit, not managed by the daemon.
	if err := in.p.Ensure(); err != nil {
		t.Fatal(err)
	}
	helperLog, err := os.Create(filepath.Join(t.TempDir(), "helper.log"))
	if err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(filepath.Join(binDir, "banger-helper"), "--owner-uid", "0", "--socket", in.p.HelperSocket(), "--debug")
	helper.Stdout, helper.Stderr = helperLog, helperLog
	helper.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		helper.Process.Kill()
		helper.Wait()
		if t.Failed() {
			t.Logf("helper log:\n%s", readFile(helperLog.Name()))
		}
	})
	waitForSocket(t, in.p.HelperSocket())
	if _, err := rpc.Invoke(context.Background(), rpc.NewClient(in.p.HelperSocket()), api.MethodHelperPing, api.Empty{}); err != nil {
		t.Fatal(err)
	}

	unit := newUnitCgroup(t)
	in.run("banger", "daemon", "stop")
	in.startDaemonWith()
	daemonPID := ReadPidOrFail(t, in.p.PidFile())
	unit.add(t, daemonPID)
	// A control: a process left in the unit must die by the kill, or the
	// kill below proves nothing.
	control := exec.Command("sleep", "600")
	if err := control.Start(); err != nil {
		t.Fatal(err)
	}
	go control.Wait()
	t.Cleanup(func() { control.Process.Kill() })
	unit.add(t, control.Process.Pid)

	in.ok("banger", "vm", "create", "--start", "--name", "kept", "--memory", "512M")
	before := in.inspect("kept")
	if msg := vmmCgroupProblem(before); msg != "" {
		t.Fatalf("%s\ndaemon log:\n%s", msg, readFile(in.p.DaemonLog()))
	}
	for _, p := range unit.procs(t) {
		if p == before.PID {
			t.Fatalf("qemu %d still listed in the unit's cgroup", before.PID)
		}
	}

	unit.kill(t)
	waitGone(t, daemonPID)
	waitGone(t, control.Process.Pid)
	if !processAlive(before.PID) {
		t.Fatalf("the unit's final kill killed the vm's qemu (pid %d)", before.PID)
	}

	in.ok("banger", "daemon", "start")
	after := in.inspect("kept")
	if after.State != model.StateRunning || after.BootID != before.BootID || after.PID != before.PID {
		t.Fatalf("after the kill and a new daemon: %+v (before: boot_id %s pid %d)", after, before.BootID, before.PID)
	}
	if out := in.ok("banger", "vm", "exec", "kept", "--", "cat", "/proc/sys/kernel/random/boot_id"); strings.TrimSpace(out) == "" {
		t.Fatal("no output from exec after re-adoption")
	}
	in.ok("banger", "vm", "rm", "-f", "kept")
	waitGone(t, before.PID)
}

// vmmCgroupProblem says why vm's VMM is not in a cgroup of its own in
// every process-tracking hierarchy, or "" when it is: banger/vm-<id>
// without systemd, a transient banger-vm-<id>.scope under systemd.
func vmmCgroupProblem(vm model.VM) string {
	cg := readFile(fmt.Sprintf("/proc/%d/cgroup", vm.PID))
	want, scope := "/banger/vm-"+vm.ID, "/banger-vm-"+vm.ID+".scope"
	found := false
	for _, line := range strings.Split(strings.TrimSpace(cg), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && (parts[0] == "0" || parts[1] == "name=systemd") {
			if parts[2] != want && !strings.HasSuffix(parts[2], scope) {
				return fmt.Sprintf("vmm of vm %s (pid %d) is in neither %s nor a %s:\n%s", vm.Name, vm.PID, want, scope[1:], cg)
			}
			found = true
		}
	}
	if !found {
		return fmt.Sprintf("vmm of vm %s (pid %d): no process-tracking hierarchy in\n%s", vm.Name, vm.PID, cg)
	}
	return ""
}
