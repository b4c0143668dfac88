package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
)

// Sizes of the load tests. make test runs the defaults; make load
// (scripts/load.sh) the full sizes: 20 VMs, 200 execs, 100 clients
// × 1000 calls.
const (
	EnvLoadVMs     = "BANGER_LOAD_VMS"     // VMs created and started at once (default 4)
	EnvLoadExecs   = "BANGER_LOAD_EXECS"   // concurrent vm exec across them (default 40)
	EnvLoadClients = "BANGER_LOAD_CLIENTS" // concurrent API clients (default 20)
	EnvLoadCalls   = "BANGER_LOAD_CALLS"   // calls per client (default 100)
)

func loadSize(t *testing.T, env string, def, least int) int {
	t.Helper()
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < least {
		t.Fatalf("%s=%q: want a number, at least %d", env, v, least)
	}
	return n
}

// runFor runs a banger binary with its own timeout and never fails the test
// itself, so many can run from goroutines.
func (in *instance) runFor(timeout time.Duration, bin string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, bin), args...)
	cmd.Env = in.env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: not done after %s: %w", bin, strings.Join(args, " "), timeout, ctx.Err())
	} else if err != nil {
		err = fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), stderr.String(), err
}

// loadEndState is what must hold again once the load is gone: the soak's
// snapshot (processes, links, nftables, mounts, files, the daemon's and the
// helper's descriptors and goroutines, helper children) and the fault
// tests' (store rows, leases, net objects, journal, VM dirs, DNS names).
type loadEndState struct {
	soak soakState
	host hostState
	fds  []string // the daemon's descriptors, for the report
}

func loadSnapshot(t *testing.T, in *instance) loadEndState {
	t.Helper()
	s := loadEndState{soak: soakSettled(t, in)}
	// The daemon pushes its name table every second: a VM removed just
	// before may still be served. Settle on two states 1.2 s apart.
	r := &faultRig{in: in}
	s.host = r.state(t)
	for i := 0; i < 10; i++ {
		time.Sleep(1200 * time.Millisecond)
		cur := r.state(t)
		if s.host.diff(cur) == "" {
			break
		}
		s.host = cur
	}
	s.fds = fdTargets(s.soak.DaemonPID)
	return s
}

// fdTargets lists what a process's descriptors point at.
func fdTargets(pid int) []string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		l, _ := os.Readlink(filepath.Join(dir, e.Name()))
		out = append(out, e.Name()+"→"+l)
	}
	return out
}

// loadExpectBack waits until the host is back to before (DNS is pushed
// every second, a tap's rules go with its last call), and fails naming each
// field that differs.
func loadExpectBack(t *testing.T, in *instance, before loadEndState) {
	t.Helper()
	var diff []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		after := loadSnapshot(t, in)
		diff = diff[:0]
		if d := before.host.diff(after.host); d != "" {
			diff = append(diff, d)
		}
		a, b := before.soak, after.soak
		// The store opens its fixed pool at start: the daemon's descriptors
		// must be exactly as before, whatever the concurrency was.
		if a.DaemonFDs != b.DaemonFDs {
			diff = append(diff, fmt.Sprintf("daemon descriptors: %d → %d\n  before %v\n  after  %v", a.DaemonFDs, b.DaemonFDs, before.fds, after.fds))
		}
		for _, f := range []struct {
			what string
			x, y any
		}{
			{"qemu processes", a.QEMU, b.QEMU}, {"links", a.Links, b.Links}, {"mounts", a.Mounts, b.Mounts},
			{"files under the home", a.Files, b.Files}, {"daemon pid", a.DaemonPID, b.DaemonPID},
			{"daemon goroutines", a.DaemonGor, b.DaemonGor}, {"helper pid", a.HelperPID, b.HelperPID},
			{"helper descriptors", a.HelperFDs, b.HelperFDs}, {"helper goroutines", a.HelperGor, b.HelperGor},
			{"helper children", a.HelperProcs, b.HelperProcs},
		} {
			if fmt.Sprint(f.x) != fmt.Sprint(f.y) {
				diff = append(diff, fmt.Sprintf("%s: %v → %v", f.what, f.x, f.y))
			}
		}
		if len(diff) == 0 {
			t.Logf("end state as before: daemon fds %d → %d, goroutines %d; helper fds %d, goroutines %d",
				a.DaemonFDs, b.DaemonFDs, b.DaemonGor, b.HelperFDs, b.HelperGor)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the load the host differs from before:\n%s\ndaemon log tail:\n%s", strings.Join(diff, "\n"), tail(readFile(in.p.DaemonLog()), 40))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// loadLogsClean fails on log lines that say the load hurt something no
// call reported: a name table the helper refused (names go stale for
// every VM), or the helper refusing the daemon's connections.
func loadLogsClean(t *testing.T, in *instance) {
	t.Helper()
	for _, c := range []struct{ log, bad string }{
		{in.p.DaemonLog(), "push vm names to the root helper's dns"},
		{in.p.DaemonLog(), "read vm names for dns"},
		{in.p.HelperLog(), "refusing connections"},
	} {
		for _, l := range strings.Split(readFile(c.log), "\n") {
			if strings.Contains(l, c.bad) {
				t.Errorf("%s: %s", filepath.Base(c.log), l)
				break
			}
		}
	}
}

// TestLoadVMs creates and starts N VMs at once (256 MiB each), checks that
// every one is ready with its own name, lease, MAC and tap (from vm ls and
// from inside each guest), runs E concurrent vm exec across them, removes
// them all at once, and checks the host holds what it held before.
func TestLoadVMs(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	n := loadSize(t, EnvLoadVMs, 4, 2)
	e := loadSize(t, EnvLoadExecs, 40, 1)
	in := vmInstance(t)
	// A first VM makes the bridge, tables and initramfs cache that stay.
	in.ok("banger", "vm", "run", "--rm", "--memory", "256M", "--", "true")
	before := loadSnapshot(t, in)

	names := make([]string, n)
	ready := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		names[i] = fmt.Sprintf("load-%d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			_, _, errs[i] = in.runFor(8*time.Minute, "banger", "vm", "create", "--name", names[i], "--memory", "256M", "--start")
			ready[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("creating %d vms at once:\n%v\ndaemon log tail:\n%s", n, err, tail(readFile(in.p.DaemonLog()), 60))
	}
	t.Logf("load: %d vms created+started at once in %s; time to ready p50 %s, p95 %s, max %s",
		n, wall.Round(time.Millisecond), percentile(ready, 50).Round(time.Millisecond), percentile(ready, 95).Round(time.Millisecond), percentile(ready, 100).Round(time.Millisecond))

	// Every VM ready, each with its own name, lease, MAC, tap, VMM, boot.
	var l api.VMList
	if err := json.Unmarshal([]byte(in.ok("banger", "vm", "ls", "--json")), &l); err != nil {
		t.Fatal(err)
	}
	if len(l.VMs) != n {
		t.Fatalf("vm ls lists %d vms, want %d", len(l.VMs), n)
	}
	vms := map[string]model.VM{}
	seen := map[string]string{}
	for _, vm := range l.VMs {
		if vm.State != model.StateRunning || vm.BootID == "" {
			t.Errorf("vm %s: state %s, boot id %q: want running with a boot id", vm.Name, vm.State, vm.BootID)
		}
		for _, f := range []struct{ kind, v string }{{"name", vm.Name}, {"ip", vm.IP}, {"mac", vm.MAC}, {"tap", vm.Tap},
			{"pid", strconv.Itoa(vm.PID)}, {"boot id", vm.BootID}, {"dir", vm.Dir}} {
			if f.v == "" || f.v == "0" {
				t.Errorf("vm %s has no %s", vm.Name, f.kind)
				continue
			}
			if other, dup := seen[f.kind+" "+f.v]; dup {
				t.Errorf("vms %s and %s share %s %s", other, vm.Name, f.kind, f.v)
			}
			seen[f.kind+" "+f.v] = vm.Name
		}
		vms[vm.Name] = vm
	}
	for _, name := range names {
		if _, ok := vms[name]; !ok {
			t.Errorf("vm %s is not listed", name)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// E execs at once, round robin over the VMs; each prints its token and
	// what the guest itself sees: host name, eth0's MAC and address.
	lat := make([]time.Duration, e)
	xerrs := make([]error, e)
	start = time.Now()
	for i := range e {
		vm := vms[names[i%n]]
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := fmt.Sprintf("tok-%d", i)
			t0 := time.Now()
			out, _, err := in.runFor(5*time.Minute, "banger", "vm", "exec", vm.Name, "--", "sh", "-c",
				`echo "$0 $(hostname) $(cat /sys/class/net/eth0/address)"; ip -4 -o addr show dev eth0`, tok)
			lat[i] = time.Since(t0)
			if err != nil {
				xerrs[i] = err
				return
			}
			lines := strings.SplitN(out, "\n", 2)
			want := tok + " " + vm.Name + " " + vm.MAC
			if lines[0] != want || len(lines) < 2 || !strings.Contains(lines[1], " inet "+vm.IP+"/") {
				xerrs[i] = fmt.Errorf("exec %d on %s: output %q, want %q and inet %s", i, vm.Name, out, want, vm.IP)
			}
		}()
	}
	wg.Wait()
	xwall := time.Since(start)
	if err := errors.Join(xerrs...); err != nil {
		t.Fatalf("%d concurrent execs:\n%v\ndaemon log tail:\n%s", e, err, tail(readFile(in.p.DaemonLog()), 60))
	}
	t.Logf("load: %d concurrent vm exec on %d vms, all correct, in %s; latency p50 %s, p99 %s, max %s",
		e, n, xwall.Round(time.Millisecond), percentile(lat, 50).Round(time.Millisecond), percentile(lat, 99).Round(time.Millisecond), percentile(lat, 100).Round(time.Millisecond))

	// Each VM still has the boot it had (no exec restarted anything).
	for _, name := range names {
		if cur := in.inspect(name); cur.PID != vms[name].PID || cur.BootID != vms[name].BootID || cur.State != model.StateRunning {
			t.Errorf("vm %s changed under the execs: pid %d → %d, boot %s → %s, state %s", name, vms[name].PID, cur.PID, vms[name].BootID, cur.BootID, cur.State)
		}
	}

	rerrs := make([]error, n)
	start = time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, rerrs[i] = in.runFor(5*time.Minute, "banger", "vm", "rm", "-f", names[i])
		}()
	}
	wg.Wait()
	if err := errors.Join(rerrs...); err != nil {
		t.Fatalf("removing %d vms at once:\n%v", n, err)
	}
	t.Logf("load: %d vms removed at once in %s", n, time.Since(start).Round(time.Millisecond))
	loadExpectBack(t, in, before)
	loadLogsClean(t, in)
}

// TestLoadAPI runs C concurrent clients of K calls each against one
// daemon, a mix of reads (vm ls, vm get, daemon status, image ls, kernel ls,
// operations) and writes that go through the store, the per-VM locks and
// the root helper (vm create of a stopped VM, with its tap, lease and
// rules; vm rm; forgetting a VM's host keys). No call may fail; the
// daemon's descriptors and resident memory must stay flat.
func TestLoadAPI(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	clients := loadSize(t, EnvLoadClients, 20, 1)
	calls := loadSize(t, EnvLoadCalls, 100, 50)
	in := vmInstance(t)
	// A small image keeps each create's disk clone cheap: the load is on
	// the daemon, the store and the helper, not on copying disks.
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	in.ok("banger", "image", "import", "tiny", root)
	img, err := rpc.Invoke(context.Background(), in.client(), api.MethodImageGet, api.ArtifactRef{Name: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	create := func(name string) api.VMCreate {
		return api.VMCreate{Name: name, Image: "tiny", MemoryMiB: 256, DiskBytes: img.SizeBytes}
	}
	// The VM every client reads and forgets the keys of; a first create
	// and rm make the bridge and tables that stay.
	ctx := context.Background()
	c := in.client()
	if _, err := rpc.Invoke(ctx, c, api.MethodVMCreate, create("api-base")); err != nil {
		t.Fatal(err)
	}
	if _, err := rpc.Invoke(ctx, c, api.MethodVMCreate, create("api-warm")); err != nil {
		t.Fatal(err)
	}
	if _, err := rpc.Invoke(ctx, c, api.MethodVMRemove, api.VMRemove{Name: "api-warm", Force: true}); err != nil {
		t.Fatal(err)
	}
	before := loadSnapshot(t, in)
	status := func() api.DaemonStatus {
		st, err := rpc.Invoke(ctx, c, api.MethodDaemonStatus, api.Empty{})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st0 := status()

	type sample struct {
		kind string
		d    time.Duration
	}
	lat := make([][]sample, clients)
	var failures atomic.Int64
	var firstErrs sync.Map
	var done atomic.Int64
	total := int64(clients * calls)
	// Halfway through, the daemon's memory and descriptors under load.
	var mid api.DaemonStatus
	midDone := make(chan struct{})
	go func() {
		defer close(midDone)
		for done.Load() < total/2 && failures.Load() == 0 {
			time.Sleep(20 * time.Millisecond)
		}
		mid, _ = rpc.Invoke(ctx, c, api.MethodDaemonStatus, api.Empty{})
	}()
	start := time.Now()
	var wg sync.WaitGroup
	for ci := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := in.client()
			own := ""
			fail := func(kind string, err error) {
				failures.Add(1)
				firstErrs.LoadOrStore(kind, fmt.Sprintf("client %d: %v", ci, err))
			}
			for k := range calls {
				var kind string
				var err error
				t0 := time.Now()
				switch {
				case k%50 == 0:
					kind = "vm.create"
					own = fmt.Sprintf("api-%d-%d", ci, k)
					var vm model.VM
					vm, err = rpc.Invoke(ctx, cl, api.MethodVMCreate, create(own))
					if err == nil && (vm.State != model.StateStopped || vm.Tap == "" || vm.IP == "") {
						err = fmt.Errorf("created vm %s is %s with tap %q ip %q: want stopped, with both", own, vm.State, vm.Tap, vm.IP)
					}
				case k%50 == 25 && own != "":
					kind = "vm.rm"
					_, err = rpc.Invoke(ctx, cl, api.MethodVMRemove, api.VMRemove{Name: own})
					own = ""
				case k%10 == 7:
					kind = "vm.forget_host_key"
					_, err = rpc.Invoke(ctx, cl, api.MethodVMForgetHostKey, api.VMRef{Name: "api-base"})
				case k%5 == 1:
					kind = "daemon.status"
					var st api.DaemonStatus
					st, err = rpc.Invoke(ctx, cl, api.MethodDaemonStatus, api.Empty{})
					if err == nil && !st.Helper.Reachable {
						err = fmt.Errorf("daemon status: root helper unreachable: %s", st.Helper.Error)
					}
				case k%5 == 2:
					kind = "vm.get"
					var vm model.VM
					vm, err = rpc.Invoke(ctx, cl, api.MethodVMGet, api.VMRef{Name: "api-base"})
					if err == nil && vm.Name != "api-base" {
						err = fmt.Errorf("vm get api-base returned %q", vm.Name)
					}
				case k%5 == 3:
					kind = "image.list"
					var il api.ImageList
					il, err = rpc.Invoke(ctx, cl, api.MethodImageList, api.Empty{})
					if err == nil && len(il.Images) != 2 {
						err = fmt.Errorf("image ls lists %d images, want 2", len(il.Images))
					}
				case k%5 == 4:
					kind = "kernel.list"
					_, err = rpc.Invoke(ctx, cl, api.MethodKernelList, api.Empty{})
				default:
					kind = "vm.list"
					var vl api.VMList
					vl, err = rpc.Invoke(ctx, cl, api.MethodVMList, api.Empty{})
					if err == nil && !slicesContainsVM(vl.VMs, "api-base") {
						err = fmt.Errorf("vm ls lost api-base: %d vms", len(vl.VMs))
					}
				}
				lat[ci] = append(lat[ci], sample{kind, time.Since(t0)})
				done.Add(1)
				if err != nil {
					fail(kind, err)
				}
			}
			if own != "" {
				if _, err := rpc.Invoke(ctx, cl, api.MethodVMRemove, api.VMRemove{Name: own}); err != nil {
					fail("vm.rm", err)
				}
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	<-midDone
	if n := failures.Load(); n > 0 {
		var firsts []string
		firstErrs.Range(func(k, v any) bool { firsts = append(firsts, fmt.Sprintf("%s: %s", k, v)); return true })
		t.Fatalf("%d of %d calls failed; first failure of each method:\n%s\ndaemon log tail:\n%s", n, total, strings.Join(firsts, "\n"), tail(readFile(in.p.DaemonLog()), 40))
	}
	byKind := map[string][]time.Duration{}
	var all []time.Duration
	for _, l := range lat {
		for _, s := range l {
			byKind[s.kind] = append(byKind[s.kind], s.d)
			all = append(all, s.d)
		}
	}
	t.Logf("load: %d clients × %d calls = %d calls in %s (%.0f calls/s), no error; latency p50 %s, p99 %s, max %s",
		clients, calls, len(all), wall.Round(time.Millisecond), float64(len(all))/wall.Seconds(),
		percentile(all, 50).Round(time.Microsecond), percentile(all, 99).Round(time.Microsecond), percentile(all, 100).Round(time.Microsecond))
	for _, k := range []string{"vm.list", "vm.get", "daemon.status", "image.list", "kernel.list", "vm.forget_host_key", "vm.create", "vm.rm"} {
		if d := byKind[k]; len(d) > 0 {
			t.Logf("load:   %-18s %6d calls, p50 %s, p99 %s", k, len(d), percentile(d, 50).Round(time.Microsecond), percentile(d, 99).Round(time.Microsecond))
		}
	}

	// Memory: the daemon's resident set after all calls against halfway.
	// A leak grows with the calls (1 KiB a call is 100 MiB over the full
	// run); a working set reached under load only plateaus. The margin
	// lets the Go heap settle at another size.
	st1 := status()
	if mid.Resources == nil || st0.Resources == nil || st1.Resources == nil {
		t.Fatalf("daemon status carries no resources")
	}
	mb := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	t.Logf("load: daemon rss %s before, %s halfway, %s after; fds %d, %d, %d; goroutines %d, %d, %d",
		mb(st0.Resources.RSSBytes), mb(mid.Resources.RSSBytes), mb(st1.Resources.RSSBytes),
		st0.Resources.FDs, mid.Resources.FDs, st1.Resources.FDs, st0.Resources.Goroutines, mid.Resources.Goroutines, st1.Resources.Goroutines)
	if limit := mid.Resources.RSSBytes*5/4 + 16<<20; st1.Resources.RSSBytes > limit {
		t.Errorf("daemon rss grew from %s halfway to %s after (limit %s): memory grows with calls", mb(mid.Resources.RSSBytes), mb(st1.Resources.RSSBytes), mb(limit))
	}
	// Every VM the clients made is gone with its tap, lease and rules;
	// api-base is as it was.
	loadExpectBack(t, in, before)
	loadLogsClean(t, in)
}

func slicesContainsVM(vms []model.VM, name string) bool {
	for _, vm := range vms {
		if vm.Name == name {
			return true
		}
	}
	return false
}
