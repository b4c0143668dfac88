package e2e

// Fault injection: the owner daemon is SIGKILLed at each named step of
// vm create, vm run, vm start, vm stop, vm rm and vm fork (a bangerd built with the
// faultinject tag pauses there and says so with a marker file: no sleeps),
// then restarted, and the host must hold exactly what it held before the
// operation (processes, taps, nftables rules, leases, DNS names, files,
// store rows), or, for an operation on a VM that existed before, the VM
// must be usable or in error with the reason, and removable.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/faultinject"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/testutil"
)

// faultRig is a VM instance plus a bangerd built with the faultinject tag.
type faultRig struct {
	in     *instance
	faultd string // the faultinject bangerd
	// sentinel runs through the whole test: recovery must leave it alone.
	sentinel model.VM
}

func faultSetup(t *testing.T) *faultRig {
	t.Helper()
	in := vmInstance(t)
	r := &faultRig{in: in, faultd: faultDaemon(t)}
	in.ok("banger", "vm", "create", "--start", "--name", "sentinel", "--memory", "384M")
	r.sentinel = in.inspect("sentinel")
	return r
}

// faultDaemon builds a bangerd with the faultinject tag, with the guest
// agent and the root helper beside it (where the daemon looks for them).
func faultDaemon(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-tags", "faultinject", "-trimpath", "-o", filepath.Join(dir, "bangerd"), "../cmd/bangerd")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the faultinject bangerd: %v\n%s", err, out)
	}
	copyFile(t, filepath.Join(binDir, "banger-vsock-agent"), filepath.Join(dir, "banger-vsock-agent"), 0o755)
	copyFile(t, filepath.Join(binDir, "banger-helper"), filepath.Join(dir, "banger-helper"), 0o755)
	return filepath.Join(dir, "bangerd")
}

// killAt runs banger args against a daemon that pauses at point, SIGKILLs
// the daemon there, and starts the release daemon again (which recovers).
func (r *faultRig) killAt(t *testing.T, point string, args ...string) {
	t.Helper()
	faultKillAt(t, r.in, r.faultd, point, args...)
}

// faultKillAt runs banger args against faultd paused at point, SIGKILLs
// it there and starts the release daemon again; it returns what the
// command printed.
func faultKillAt(t *testing.T, in *instance, faultd, point string, args ...string) string {
	t.Helper()
	in.ok("banger", "daemon", "stop")
	markers := t.TempDir()
	in.extraEnv = []string{"BANGER_DAEMON_BIN=" + faultd, faultinject.EnvPause + "=" + point, faultinject.EnvDir + "=" + markers}
	in.ok("banger", "daemon", "start")
	cmd := exec.Command(filepath.Join(binDir, "banger"), args...)
	cmd.Env = in.env()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	marker := filepath.Join(markers, strings.ReplaceAll(point, "/", "."))
	deadline := time.Now().Add(4 * time.Minute)
	for !faultMarked(marker) {
		select {
		case err := <-exited:
			t.Fatalf("banger %v ended (%v) before the daemon reached %s:\n%s\ndaemon log:\n%s", args, err, point, out.String(), readFile(in.p.DaemonLog()))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not reach %s in 4m", point)
		}
	}
	pid, err := strconv.Atoi(strings.TrimSpace(readFile(marker)))
	if err != nil {
		t.Fatalf("marker %s: %v", marker, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("banger %v still waits after its daemon died", args)
	}
	in.extraEnv = nil
	in.ok("banger", "daemon", "start")
	return out.String()
}

// hostState is what the host holds, as far as banger is concerned.
type hostState struct {
	QEMU    []string // pid:cmdline-hash of qemu processes
	Links   []string
	NFT     string
	VMs     []string // id:state
	Leases  []string
	NetObjs []string
	Ops     []string
	VMDirs  []string
	DNS     int // names the helper's DNS serves
}

var nftCounters = regexp.MustCompile(`counter packets \d+ bytes \d+`)

func (r *faultRig) state(t *testing.T) hostState {
	t.Helper()
	var h hostState
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		// Other tests' VMs share the pid namespace: only this home's count.
		exe, err := os.Readlink("/proc/" + e.Name() + "/exe")
		if err != nil || !strings.HasPrefix(filepath.Base(exe), "qemu") {
			continue
		}
		if cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && strings.Contains(string(cmdline), r.in.home+"/") {
			h.QEMU = append(h.QEMU, e.Name())
		}
	}
	links, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(links), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			h.Links = append(h.Links, strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":"))
		}
	}
	nft, err := exec.Command("nft", "list", "ruleset").Output()
	if err != nil {
		t.Fatal(err)
	}
	// A restarted helper re-creates its tables: their order may change.
	tables := strings.Split("\n"+nftCounters.ReplaceAllString(string(nft), "counter"), "\ntable ")
	slices.Sort(tables)
	h.NFT = strings.Join(tables, "\ntable ")
	st, err := store.Open(context.Background(), r.in.p.StoreFile(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	vms, err := st.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range vms {
		h.VMs = append(h.VMs, vm.Name+":"+string(vm.State))
	}
	leases, err := st.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		h.Leases = append(h.Leases, l.IP+":"+l.VMID)
	}
	objs, err := st.ListNetObjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		h.NetObjs = append(h.NetObjs, o.Kind+":"+o.Name)
	}
	ops, err := st.ListOperations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range ops {
		h.Ops = append(h.Ops, fmt.Sprintf("%s %s@%s", o.Kind, o.VMName, o.Step))
	}
	h.VMDirs = r.in.vmDirs()
	if ns, err := rpc.Invoke(ctx, r.in.client(), api.MethodNetworkState, api.Empty{}); err == nil && ns.DNS != nil {
		h.DNS = ns.DNS.Names
	}
	return h
}

func (h hostState) diff(o hostState) string {
	var d []string
	for _, c := range []struct {
		what string
		a, b []string
	}{{"qemu processes", h.QEMU, o.QEMU}, {"links", h.Links, o.Links}, {"vms", h.VMs, o.VMs}, {"leases", h.Leases, o.Leases},
		{"net objects", h.NetObjs, o.NetObjs}, {"journal", h.Ops, o.Ops}, {"vm dirs", h.VMDirs, o.VMDirs}} {
		if !slices.Equal(c.a, c.b) {
			d = append(d, fmt.Sprintf("%s: %v → %v", c.what, c.a, c.b))
		}
	}
	if h.NFT != o.NFT {
		a, b := strings.Split(h.NFT, "\n"), strings.Split(o.NFT, "\n")
		var gone, added []string
		for _, l := range a {
			if !slices.Contains(b, l) {
				gone = append(gone, l)
			}
		}
		for _, l := range b {
			if !slices.Contains(a, l) {
				added = append(added, l)
			}
		}
		if len(gone)+len(added) > 0 {
			d = append(d, fmt.Sprintf("nftables ruleset changed: lines gone %q, lines added %q", gone, added))
		}
	}
	if h.DNS != o.DNS {
		d = append(d, fmt.Sprintf("dns names: %d → %d", h.DNS, o.DNS))
	}
	return strings.Join(d, "\n")
}

// expectUnchanged waits (DNS is pushed every second) until the host is
// back to before, and fails with the difference if it is not.
func (r *faultRig) expectUnchanged(t *testing.T, point string, before hostState) {
	t.Helper()
	var last string
	deadline := time.Now().Add(15 * time.Second)
	for {
		last = before.diff(r.state(t))
		if last == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a kill at %s and recovery the host differs from before:\n%s\ndaemon log:\n%s", point, last, readFile(r.in.p.DaemonLog()))
		}
		time.Sleep(250 * time.Millisecond)
	}
	if cur := r.in.inspect("sentinel"); cur.State != model.StateRunning || cur.PID != r.sentinel.PID || cur.BootID != r.sentinel.BootID {
		t.Fatalf("after a kill at %s the sentinel vm changed: %+v", point, cur)
	}
}

// faultPoints is the kill points a test walks: all of them under
// BANGER_FAULT_ALL=1 (make faults), else the short set make test runs (the
// first side effect, the VMM, the last step), so the suite stays within
// its time budget. The short set must be part of all.
func faultPoints(t *testing.T, all []string, short ...string) []string {
	t.Helper()
	for _, p := range short {
		if !slices.Contains(all, p) {
			t.Fatalf("fault point %q is not one of %v", p, all)
		}
	}
	if os.Getenv("BANGER_FAULT_ALL") == "1" {
		return all
	}
	return short
}

func faultVMGone(t *testing.T, in *instance, name string) {
	t.Helper()
	if _, _, code := in.run("banger", "vm", "inspect", name); code == 0 {
		t.Fatalf("vm %q still exists", name)
	}
	// The daemon pushes its name table every second.
	waitFor(t, 10*time.Second, name+".banger is not resolved", func() (bool, string) {
		_, rcode, err := resolveA(name + ".banger")
		return err == nil && rcode == 3, fmt.Sprintf("rcode %d, %v", rcode, err)
	})
}

// TestFaultKillCreate: a daemon killed at any step of vm create, or of
// vm run (create, boot, run, remove), leaves nothing: the operation is
// rolled back whole.
func TestFaultKillCreate(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	r := faultSetup(t)
	for _, step := range []string{"record", "disk", "network", "parked"} {
		before := r.state(t)
		r.killAt(t, "create/"+step, "vm", "create", "--name", "c-"+step, "--memory", "384M")
		faultVMGone(t, r.in, "c-"+step)
		r.expectUnchanged(t, "create/"+step, before)
	}
	for _, step := range faultPoints(t, []string{"validate", "starting", "config", "initramfs", "vmm", "ready", "running"}, "validate", "vmm", "running") {
		before := r.state(t)
		r.killAt(t, "create/"+step, "vm", "run", "--rm", "--name", "r-"+step, "--memory", "384M", "--", "true")
		faultVMGone(t, r.in, "r-"+step)
		r.expectUnchanged(t, "vm run create/"+step, before)
	}
}

// TestFaultKillStart: a start cut short is rolled back: no VMM left, the VM
// in error with the reason (or still stopped when nothing had begun), and
// vm start makes it usable again; vm rm then leaves nothing.
func TestFaultKillStart(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	r := faultSetup(t)
	for _, step := range faultPoints(t, []string{"validate", "starting", "config", "initramfs", "vmm", "ready", "running"}, "starting", "vmm", "ready") {
		name := "s-" + step
		before := r.state(t)
		r.in.ok("banger", "vm", "create", "--name", name, "--memory", "384M")
		r.killAt(t, "start/"+step, "vm", "start", name)
		vm := r.in.inspect(name)
		switch {
		case vm.PID != 0:
			t.Fatalf("start/%s: recovered vm still records vmm pid %d", step, vm.PID)
		case vm.State == model.StateError && !strings.Contains(vm.StateReason, "daemon stopped during vm start (step "+step+")"):
			t.Fatalf("start/%s: error without the reason: %q", step, vm.StateReason)
		// Paused before step "starting" ran, the VM never left stopped.
		case vm.State != model.StateError && !((step == "validate" || step == "starting") && vm.State == model.StateStopped):
			t.Fatalf("start/%s: recovered vm is %s (%s)", step, vm.State, vm.StateReason)
		}
		if out, _ := exec.Command("pgrep", "-f", "qemu-system.*"+vm.Dir).Output(); len(out) > 0 {
			t.Fatalf("start/%s: qemu of the interrupted start still runs: %s", step, out)
		}
		r.in.ok("banger", "vm", "start", name)
		r.in.ok("banger", "vm", "exec", name, "--", "true")
		r.in.ok("banger", "vm", "rm", "-f", name)
		faultVMGone(t, r.in, name)
		r.expectUnchanged(t, "start/"+step, before)
	}
}

// TestFaultKillStop: a stop cut short is finished: the VM is stopped, its
// VMM gone, and it starts and is removed as any other.
func TestFaultKillStop(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	r := faultSetup(t)
	for _, step := range []string{"stopping", "poweroff", "stopped"} {
		name := "p-" + step
		before := r.state(t)
		r.in.ok("banger", "vm", "create", "--start", "--name", name, "--memory", "384M")
		pid := r.in.inspect(name).PID
		r.killAt(t, "stop/"+step, "vm", "stop", name)
		vm := r.in.inspect(name)
		if vm.State != model.StateStopped || vm.PID != 0 || processAlive(pid) {
			t.Fatalf("stop/%s: after recovery %s (%s), pid %d, old qemu %d alive %v", step, vm.State, vm.StateReason, vm.PID, pid, processAlive(pid))
		}
		if step == "stopping" {
			// Once: the stopped VM is a VM like any other.
			r.in.ok("banger", "vm", "start", name)
			r.in.ok("banger", "vm", "exec", name, "--", "true")
		}
		r.in.ok("banger", "vm", "rm", "-f", name)
		faultVMGone(t, r.in, name)
		r.expectUnchanged(t, "stop/"+step, before)
	}
}

// TestFaultKillRemove: a removal cut short (of a running VM, with --force)
// is finished: nothing of the VM is left.
func TestFaultKillRemove(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	r := faultSetup(t)
	for _, step := range faultPoints(t, []string{"kill", "stopping", "poweroff", "stopped", "detach", "files", "forget"}, "kill", "detach", "forget") {
		name := "m-" + step
		before := r.state(t)
		r.in.ok("banger", "vm", "create", "--start", "--name", name, "--memory", "384M")
		pid := r.in.inspect(name).PID
		r.killAt(t, "remove/"+step, "vm", "rm", "-f", name)
		if processAlive(pid) {
			t.Fatalf("remove/%s: qemu %d survived", step, pid)
		}
		faultVMGone(t, r.in, name)
		r.expectUnchanged(t, "remove/"+step, before)
	}
}

// TestFaultKillFork: a daemon killed at a step of vm fork leaves nothing
// of the clone (no VMM, tap, lease, record, dir or journal row), the
// snapshot no longer lists it, and the snapshot still forks and is
// removed without --force.
func TestFaultKillFork(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	r := faultSetup(t)
	r.in.ok("banger", "vm", "snapshot", "sentinel", "--as", "fsnap")
	for _, step := range faultPoints(t, []string{"record", "disk", "network", "config", "starting", "initramfs", "restore", "ready", "identity", "clock", "running"}, "identity") {
		name := "f-" + step
		before := r.state(t)
		r.killAt(t, "fork/"+step, "vm", "fork", "fsnap", "--name", name)
		faultVMGone(t, r.in, name)
		r.expectUnchanged(t, "fork/"+step, before)
		if sn := snapSnapshot(t, r.in, "fsnap"); len(sn.Users) != 0 {
			t.Fatalf("fork/%s: after recovery the snapshot lists %v", step, sn.Users)
		}
	}
	r.in.ok("banger", "vm", "run", "--rm", "--from", "fsnap", "--name", "f-after", "--", "true")
	r.in.ok("banger", "snapshot", "rm", "fsnap")
}

// TestFaultReleaseBuildHasNoHooks: the binaries a release is made of
// (scripts/build.sh) carry no faultinject tag.
func TestFaultReleaseBuildHasNoHooks(t *testing.T) {
	out, err := exec.Command("go", "version", "-m", filepath.Join(binDir, "bangerd")).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "build\tCGO_ENABLED=0") {
		t.Fatalf("go version -m shows no build settings:\n%s", out)
	}
	if strings.Contains(string(out), "faultinject") {
		t.Fatalf("the release bangerd was built with fault injection:\n%s", out)
	}
}

func faultMarked(p string) bool { _, err := os.Stat(p); return err == nil }

// Host reboot: phase "before" runs VMs in one network namespace and then
// loses everything a reboot loses (every banger process and VMM killed,
// the runtime directory removed, the namespace and with it the bridge,
// taps and nftables tables gone); phase "after" starts the daemon in a
// fresh namespace on the same BANGER_HOME.
const (
	envRebootPhase = "BANGER_FAULT_REBOOT_PHASE"
	envRebootHome  = "BANGER_FAULT_REBOOT_HOME"
)

// TestFaultHostReboot: after a simulated reboot the daemon reconciles every
// VM to stopped, and vm start works again.
func TestFaultHostReboot(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if phase := os.Getenv(envRebootPhase); phase != "" {
		faultRebootPhase(t, phase, os.Getenv(envRebootHome))
		return
	}
	testutil.RequireRoot(t)
	testutil.RequireQEMU(t)
	testutil.Kernel(t)
	testutil.Image(t)
	testutil.RequireBinary(t, "unshare")
	home := t.TempDir()
	for _, phase := range []string{"before", "after"} {
		cmd := exec.Command("unshare", "-n", "--", "sh", "-c", `ip link set lo up && exec "$@"`, "sh", os.Args[0],
			"-test.run", "^TestFaultHostReboot$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), testutil.EnvInNetNS+"=1", envRebootPhase+"="+phase, envRebootHome+"="+home)
		out, err := cmd.CombinedOutput()
		t.Logf("phase %s, in its own network namespace:\n%s", phase, out)
		if err != nil || !strings.Contains(string(out), "--- PASS: TestFaultHostReboot") {
			t.Fatalf("phase %s failed: %v", phase, err)
		}
	}
}

func faultRebootPhase(t *testing.T, phase, home string) {
	in := newInstanceFromHome(t, home)
	switch phase {
	case "before":
		kernel, modules := testutil.Kernel(t)
		in.ok("banger", "kernel", "import", "debian-cloud", kernel, "--modules", modules)
		in.ok("banger", "image", "import", "debian-bookworm", testutil.Image(t))
		in.ok("banger", "vm", "create", "--start", "--name", "up1", "--memory", "384M")
		in.ok("banger", "vm", "create", "--start", "--name", "up2", "--memory", "384M")
		in.ok("banger", "vm", "create", "--name", "down", "--memory", "384M")
		// Power off: every process of this home dies at once.
		var pids []int
		for _, f := range []string{in.p.PidFile(), in.p.HelperPidFile()} {
			pids = append(pids, ReadPidOrFail(t, f))
		}
		for _, vm := range []string{"up1", "up2"} {
			pids = append(pids, in.inspect(vm).PID)
		}
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatalf("kill %d: %v", pid, err)
			}
		}
		for _, pid := range pids {
			waitGone(t, pid)
		}
		if err := os.RemoveAll(in.p.Runtime); err != nil {
			t.Fatal(err)
		}
		// The namespace, and its bridge, taps and nftables tables, goes
		// when this process exits.
	case "after":
		t.Cleanup(in.cleanup)
		if out, _ := exec.Command("ip", "-o", "link", "show").Output(); strings.Contains(string(out), "banger0") {
			t.Fatalf("the fresh namespace already has banger's bridge:\n%s", out)
		}
		in.ok("banger", "daemon", "start")
		for _, name := range []string{"up1", "up2", "down"} {
			vm := in.inspect(name)
			if vm.State != model.StateStopped || vm.PID != 0 {
				t.Fatalf("after the reboot vm %s is %s (%s), pid %d: want stopped", name, vm.State, vm.StateReason, vm.PID)
			}
		}
		in.ok("banger", "vm", "start", "up1")
		in.ok("banger", "vm", "exec", "up1", "--", "true")
		in.ok("banger", "vm", "start", "down")
		in.ok("banger", "vm", "exec", "down", "--", "true")
		for _, name := range []string{"up1", "up2", "down"} {
			in.ok("banger", "vm", "rm", "-f", name)
		}
		if d := in.vmDirs(); len(d) != 0 {
			t.Fatalf("vm dirs left: %v", d)
		}
		out, _ := exec.Command("ip", "-o", "link", "show").Output()
		if strings.Contains(string(out), "bt-") {
			t.Fatalf("taps left after removing every vm:\n%s", out)
		}
	default:
		t.Fatalf("unknown phase %q", phase)
	}
}
