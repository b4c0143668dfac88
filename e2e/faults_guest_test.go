package e2e

// Guest faults: a guest that kills its agent (PID 1), powers itself off,
// panics its kernel, floods its console or stops answering (its VMM
// SIGSTOPped). Each time the VM ends in a stated state with the reason in
// vm inspect, it can be started again or removed, and nothing is left.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/testutil"
)

// waitState waits until vm name is in state want and returns it.
func waitState(t *testing.T, in *instance, name string, want model.VMState, within time.Duration) model.VM {
	t.Helper()
	var vm model.VM
	waitFor(t, within, "vm "+name+" is "+string(want), func() (bool, string) {
		vm = in.inspect(name)
		return vm.State == want, string(vm.State) + " (" + vm.StateReason + ")"
	})
	return vm
}

// TestFaultGuest: one VM through the guest's faults in turn. make test runs
// SIGKILL to the agent, a poweroff and the agent crashing (two boots);
// BANGER_FAULT_ALL adds the console flood, the guest that never answers,
// init's SIGTERM shutdown and a sysrq panic (three more).
func TestFaultGuest(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	r := &faultRig{in: in}
	okWithin(t, in, 5*time.Minute, "vm", "create", "--start", "--name", "g", "--memory", "384M")
	up := in.inspect("g")

	// The agent is PID 1: SIGKILL from inside its namespace never reaches
	// it. The VM runs on, same VMM, same boot.
	in.run("banger", "vm", "exec", "g", "--", "sh", "-c", "kill -KILL 1; true")
	in.ok("banger", "vm", "exec", "g", "--", "true")
	if cur := in.inspect("g"); cur.State != model.StateRunning || cur.PID != up.PID || cur.BootID != up.BootID {
		t.Fatalf("after SIGKILL to the agent: %s (%s), pid %d→%d, boot %s→%s", cur.State, cur.StateReason, up.PID, cur.PID, up.BootID, cur.BootID)
	}
	faultGuestDown(t, in, up, "echo o > /proc/sysrq-trigger", model.StateStopped, "powered itself off")
	// The agent crashed (SIGABRT makes the Go runtime throw): init is
	// gone, the kernel panics.
	faultGuestDown(t, in, in.inspect("g"), "kill -ABRT 1", model.StateError, "Kernel panic")

	if os.Getenv("BANGER_FAULT_ALL") == "1" {
		okWithin(t, in, 5*time.Minute, "vm", "start", "g")
		faultConsoleFlood(t, in)
		faultGuestSilent(t, in)
		// SIGTERM to init is its shutdown request; sysrq c a plain panic.
		faultGuestDown(t, in, in.inspect("g"), "kill -TERM 1", model.StateStopped, "powered itself off")
		faultGuestDown(t, in, in.inspect("g"), "echo c > /proc/sysrq-trigger", model.StateError, "Kernel panic")
	}
	in.ok("banger", "vm", "rm", "-f", "g")
	faultVMGone(t, in, "g")
	r.expectNoVMLeft(t, "guest faults")
}

// faultGuestDown starts vm g if it is not running, runs cmd in it (which
// ends the guest), and checks the state and reason it ends in, and that
// its VMM is gone.
func faultGuestDown(t *testing.T, in *instance, vm model.VM, cmd string, want model.VMState, reason string) {
	t.Helper()
	if vm.State != model.StateRunning {
		okWithin(t, in, 5*time.Minute, "vm", "start", "g")
		vm = in.inspect("g")
	}
	in.run("banger", "vm", "exec", "g", "--", "sh", "-c", cmd)
	cur := waitState(t, in, "g", want, 60*time.Second)
	if !strings.Contains(cur.StateReason, reason) || cur.PID != 0 || processAlive(vm.PID) {
		t.Fatalf("after %q: %s (%q), pid %d, old qemu alive %v", cmd, cur.State, cur.StateReason, cur.PID, processAlive(vm.PID))
	}
	t.Logf("after %q: %s: %s", cmd, cur.State, cur.StateReason)
}

// expectNoVMLeft checks that the last VM left nothing: no qemu of this
// home, no tap or rule naming one, no lease, tap object, journal row or VM
// directory. (The bridge and banger's tables, made with the first VM,
// stay by design.)
func (r *faultRig) expectNoVMLeft(t *testing.T, what string) {
	t.Helper()
	tapRule := regexp.MustCompile(`bt-[0-9a-f]`)
	waitFor(t, 15*time.Second, "nothing left after "+what, func() (bool, string) {
		h := r.state(t)
		var left []string
		if len(h.QEMU)+len(h.VMs)+len(h.Leases)+len(h.Ops)+len(h.VMDirs) > 0 {
			left = append(left, fmt.Sprintf("qemu %v, vms %v, leases %v, journal %v, dirs %v", h.QEMU, h.VMs, h.Leases, h.Ops, h.VMDirs))
		}
		for _, l := range h.Links {
			if strings.HasPrefix(l, "bt-") {
				left = append(left, "tap "+l)
			}
		}
		for _, o := range h.NetObjs {
			if strings.Contains(o, "bt-") {
				left = append(left, "net object "+o)
			}
		}
		if tapRule.MatchString(h.NFT) {
			left = append(left, "an nftables rule naming a tap")
		}
		return len(left) == 0, strings.Join(left, "; ")
	})
}

// faultConsoleFlood: 12 MiB written to the serial console. The log is
// trimmed to the daemon's 8 MiB bound (every 15 s, keeping the newest
// half), the newest output kept, and the VM answers.
func faultConsoleFlood(t *testing.T, in *instance) {
	t.Helper()
	const bound = 8 << 20
	start := time.Now()
	okWithin(t, in, 10*time.Minute, "vm", "exec", "g", "--", "sh", "-c",
		"yes 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef | head -c 12582912 > /dev/ttyS0; echo FLOOD-END > /dev/ttyS0")
	t.Logf("12 MiB to the console in %s", time.Since(start).Round(time.Millisecond))
	log := filepath.Join(in.inspect("g").Dir, "console.log")
	waitFor(t, 40*time.Second, "the console log is trimmed to its bound", func() (bool, string) {
		fi, err := os.Stat(log)
		if err != nil {
			return false, err.Error()
		}
		return fi.Size() <= bound, fmt.Sprint(fi.Size())
	})
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "FLOOD-END") {
		t.Fatalf("the trimmed console log (%d bytes) lost the newest output", len(data))
	}
	if out := in.ok("banger", "vm", "logs", "g"); !strings.Contains(out, "FLOOD-END") {
		t.Fatal("vm logs does not show the newest console output")
	}
	in.ok("banger", "vm", "exec", "g", "--", "true")
}

// faultGuestSilent: the VMM SIGSTOPped, so the guest answers nothing.
// vm exec fails with a clear error instead of hanging, and vm stop and
// vm rm still work.
func faultGuestSilent(t *testing.T, in *instance) {
	t.Helper()
	vm := in.inspect("g")
	if err := syscall.Kill(vm.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(vm.PID, syscall.SIGCONT) })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "banger"), "vm", "exec", "g", "--", "true")
	cmd.Env = in.env()
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("vm exec against a silent guest: %v after %s: %s", err, time.Since(start).Round(time.Millisecond), out)
	if ctx.Err() != nil {
		t.Fatal("vm exec against a silent guest still waits after 3 minutes")
	}
	if err == nil || !strings.Contains(string(out), "g") {
		t.Fatalf("vm exec against a silent guest: %v: %s", err, out)
	}
	okWithin(t, in, 3*time.Minute, "vm", "stop", "g")
	if cur := in.inspect("g"); cur.State != model.StateStopped || processAlive(vm.PID) {
		t.Fatalf("after vm stop of a silent guest: %s (%s), qemu alive %v", cur.State, cur.StateReason, processAlive(vm.PID))
	}
}
