package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/detach"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
)

// vmInstance is an isolated banger with the test kernel and default image
// imported, ready to boot real VMs (QEMU; TCG where KVM cannot run them).
// With daemonFlags the daemon is started first with them (e.g. --debug).
func vmInstance(t testing.TB, daemonFlags ...string) *instance {
	t.Helper()
	testutil.RequireQEMU(t)
	kernel, modules := testutil.Kernel(t)
	image := testutil.Image(t)
	in := newInstanceFromHome(t, t.TempDir())
	t.Cleanup(in.cleanup)
	if len(daemonFlags) > 0 {
		in.startDaemonWith(daemonFlags...)
	}
	in.ok("banger", "kernel", "import", "debian-cloud", kernel, "--modules", modules)
	in.ok("banger", "image", "import", "debian-bookworm", image)
	t.Cleanup(func() {
		// Leave no VM behind, whatever the test did.
		var l api.VMList
		if out, _, code := in.run("banger", "vm", "ls", "--json"); code == 0 && json.Unmarshal([]byte(out), &l) == nil {
			for _, vm := range l.VMs {
				in.run("banger", "vm", "rm", "-f", vm.Name)
			}
		}
	})
	return in
}

func (in *instance) inspect(name string) model.VM {
	in.t.Helper()
	var vm model.VM
	if err := json.Unmarshal([]byte(in.ok("banger", "vm", "inspect", name, "--json")), &vm); err != nil {
		in.t.Fatal(err)
	}
	return vm
}

func (in *instance) vmDirs() []string {
	ents, _ := os.ReadDir(in.p.VMsDir())
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestVMLifecycle(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	in.ok("banger", "vm", "create", "--name", "life", "--memory", "512M")
	vm := in.inspect("life")
	if vm.State != model.StateStopped {
		t.Fatalf("created vm is %s, want stopped", vm.State)
	}
	in.ok("banger", "vm", "start", "life")
	first := in.inspect("life")
	if first.State != model.StateRunning || first.BootID == "" || first.PID == 0 {
		t.Fatalf("started vm: %+v", first)
	}
	out := in.ok("banger", "vm", "exec", "life", "--", "sh", "-c", "hostname; echo out; echo err >&2")
	if !strings.Contains(out, "life") || !strings.Contains(out, "out") {
		t.Fatalf("exec output %q", out)
	}
	if _, _, code := in.run("banger", "vm", "exec", "life", "--", "sh", "-c", "exit 7"); code != 7 {
		t.Fatalf("guest exit code 7 came back as %d", code)
	}
	in.ok("banger", "vm", "stop", "life")
	if vm := in.inspect("life"); vm.State != model.StateStopped || processAlive(first.PID) {
		t.Fatalf("after stop: state %s, qemu pid %d alive=%v", vm.State, first.PID, processAlive(first.PID))
	}
	in.ok("banger", "vm", "start", "life")
	second := in.inspect("life")
	if second.BootID == first.BootID {
		t.Fatal("a new boot kept the old boot_id")
	}
	in.ok("banger", "vm", "exec", "life", "--", "true")
	in.ok("banger", "vm", "restart", "life")
	third := in.inspect("life")
	if third.State != model.StateRunning || third.BootID == second.BootID || third.PID == second.PID || processAlive(second.PID) {
		t.Fatalf("restart: %+v (previous boot_id %s, pid %d)", third, second.BootID, second.PID)
	}
	in.ok("banger", "vm", "exec", "life", "--", "true")
	second = third
	in.ok("banger", "vm", "rm", "-f", "life")
	if processAlive(second.PID) {
		t.Fatalf("qemu pid %d still runs after rm", second.PID)
	}
	if d := in.vmDirs(); len(d) != 0 {
		t.Fatalf("vm directories left after rm: %v", d)
	}
	if out := in.ok("banger", "vm", "ls", "--json"); !strings.Contains(out, `"vms": []`) {
		t.Fatalf("vm ls after rm: %s", out)
	}
}

func TestVMRunRemovesAndPropagatesExitCode(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	out, errOut, code := in.run("banger", "vm", "run", "--rm", "--memory", "512M", "--", "sh", "-c", "echo ran in $(hostname); exit 3")
	if code != 3 || !strings.Contains(out, "ran in") {
		t.Fatalf("vm run --rm: exit %d (want 3), stdout %q, stderr %q", code, out, errOut)
	}
	if d := in.vmDirs(); len(d) != 0 {
		t.Fatalf("vm run --rm left vm directories: %v", d)
	}
}

func TestThreeVMsAtOnce(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	names := []string{"one", "two", "three"}
	var wg sync.WaitGroup
	errs := make(chan string, len(names))
	for _, n := range names {
		wg.Add(1)
		go func(n string) {
			defer wg.Done()
			if out, errOut, code := in.run("banger", "vm", "create", "--start", "--name", n, "--cpus", "1", "--memory", "384M"); code != 0 {
				errs <- fmt.Sprintf("%s: exit %d %s %s", n, code, out, errOut)
			}
		}(n)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	boots, disks := map[string]bool{}, map[string]bool{}
	for _, n := range names {
		vm := in.inspect(n)
		if vm.State != model.StateRunning {
			t.Fatalf("%s is %s", n, vm.State)
		}
		boots[vm.BootID], disks[vm.Dir] = true, true
		if got := strings.TrimSpace(in.ok("banger", "vm", "exec", n, "--", "hostname")); got != n {
			t.Fatalf("vm %s says hostname %q", n, got)
		}
	}
	if len(boots) != 3 || len(disks) != 3 {
		t.Fatalf("boot_ids %v / dirs %v are not distinct", boots, disks)
	}
}

func TestVMSurvivesDaemonKill(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	in.ok("banger", "vm", "create", "--start", "--name", "survivor", "--memory", "512M")
	before := in.inspect("survivor")
	pid := ReadPidOrFail(t, in.p.PidFile())
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	if !processAlive(before.PID) {
		t.Fatal("killing the daemon killed the VM's qemu")
	}
	in.ok("banger", "daemon", "start")
	after := in.inspect("survivor")
	if after.State != model.StateRunning || after.BootID != before.BootID || after.PID != before.PID {
		t.Fatalf("after daemon restart: %+v (before: boot_id %s pid %d)", after, before.BootID, before.PID)
	}
	out := in.ok("banger", "vm", "exec", "survivor", "--", "cat", "/proc/uptime")
	if out == "" {
		t.Fatal("no output from exec after re-adoption")
	}
	// A graceful daemon stop/start too.
	in.ok("banger", "daemon", "stop")
	in.ok("banger", "daemon", "start")
	if vm := in.inspect("survivor"); vm.BootID != before.BootID || vm.State != model.StateRunning {
		t.Fatalf("after daemon stop/start: %+v", vm)
	}
	in.ok("banger", "vm", "stop", "survivor")
	in.ok("banger", "vm", "rm", "survivor")
	if processAlive(before.PID) {
		t.Fatal("qemu still runs after stop and rm")
	}
}

func TestVMMKilledUnderRunningVM(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	in.ok("banger", "vm", "create", "--start", "--name", "victim", "--memory", "512M")
	vm := in.inspect("victim")
	if err := syscall.Kill(vm.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		cur := in.inspect("victim")
		if cur.State == model.StateError {
			if !strings.Contains(cur.StateReason, "exited unexpectedly") {
				t.Fatalf("error state without the reason: %q", cur.StateReason)
			}
			in.ok("banger", "vm", "rm", "victim")
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("daemon did not notice the dead vmm: %+v", in.inspect("victim"))
}

func TestVMBadInputLeavesNothing(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	in.ok("banger", "vm", "create", "--name", "taken")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--name", "Bad_Name"}, "name"},
		{[]string{"--name", "taken"}, "already exists"},
		{[]string{"--image", "no-such-image"}, `image "no-such-image" not found`},
		{[]string{"--kernel", "no-such-kernel"}, `kernel "no-such-kernel" not found`},
		{[]string{"--vmm", "firecracker"}, "firecracker"},
		{[]string{"--cpus", fmt.Sprint(runtime.NumCPU() + 1)}, "--cpus"},
		{[]string{"--memory", "100000G"}, "--memory"},
		{[]string{"--disk-size", "1M"}, "smaller than image"},
		{[]string{"--memory", "lots"}, "not a size"},
	}
	for _, c := range cases {
		_, errOut, code := in.run("banger", append([]string{"vm", "create"}, c.args...)...)
		if code == 0 || !strings.Contains(errOut, c.want) {
			t.Errorf("vm create %v: exit %d, stderr %q (want it to mention %q)", c.args, code, errOut, c.want)
		}
	}
	if d := in.vmDirs(); len(d) != 1 {
		t.Fatalf("bad input left vm directories: %v (only 'taken' should exist)", d)
	}

	// A failure midway: an image whose /etc is a file makes the guest init
	// fail (it cannot write /etc/hostname) and power off; vm run must report
	// the step and the console, and undo everything.
	broken := t.TempDir()
	os.WriteFile(filepath.Join(broken, "etc"), []byte("not a directory\n"), 0o644)
	in.ok("banger", "image", "import", "broken", broken)
	_, errOut, code := in.run("banger", "vm", "run", "--image", "broken", "--name", "doomed", "--memory", "384M", "--", "true")
	if code == 0 || !strings.Contains(errOut, "step ready") || !strings.Contains(errOut, "last console lines") || !strings.Contains(errOut, "banger-init: error: set hostname") {
		t.Fatalf("boot of a broken image: exit %d, stderr %q (want the failed step and console lines)", code, errOut)
	}
	// Through the API the same failure keeps its code: the guest powered
	// off before it was ready (failed_precondition), not internal.
	// Every log line of the failure and its undo carries the request's op_id.
	dmark, hmark := markLog(t, in.p.DaemonLog()), markLog(t, in.p.HelperLog())
	_, err := rpc.Invoke(rpc.WithOpID(context.Background(), "op-doomed2"), in.client(), api.MethodVMCreate, api.VMCreate{Name: "doomed2", Image: "broken", MemoryMiB: 384, Start: true})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeFailedPrecondition || !strings.Contains(ae.Message, "step ready") || ae.OpID != "op-doomed2" {
		t.Fatalf("vm.create of a broken image: %#v, want failed_precondition naming step ready, with its op_id", err)
	}
	checkRequestLines(t, "daemon", dmark.since(t), "op-doomed2", "vm boot step failed", "operation failed", "call failed")
	checkRequestLines(t, "root helper", hmark.since(t), "op-doomed2", "tap ready", "tap deleted")
	if d := in.vmDirs(); len(d) != 1 {
		t.Fatalf("failed run left vm directories: %v", d)
	}
	if _, _, code := in.run("banger", "vm", "inspect", "doomed2"); code == 0 {
		t.Fatal("failed create left a vm record")
	}
	if _, _, code := in.run("banger", "vm", "inspect", "doomed"); code == 0 {
		t.Fatal("failed run left a vm record")
	}
	if out, _ := exec.Command("pgrep", "-f", "qemu-system.*"+in.p.VMsDir()).Output(); len(out) > 0 {
		t.Fatalf("failed run left qemu running: %s", out)
	}
}

// ReadPidOrFail reads the daemon's pid file.
func ReadPidOrFail(t *testing.T, path string) int {
	t.Helper()
	var pid int
	if _, err := fmt.Sscanf(readFile(path), "%d", &pid); err != nil || pid <= 0 {
		t.Fatalf("read pid file %s: %v", path, err)
	}
	return pid
}

// waitGone waits until every thread of pid has exited (a pidfd event; a
// zombie leader alone does not count, its threads may still hold files).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	if !detach.WaitExit(pid, 10*time.Second) {
		t.Fatalf("pid %d still alive", pid)
	}
}
