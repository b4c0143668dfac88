package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/events"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/opstate"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/testutil"
	"github.com/bangerdev/banger/internal/vmlife"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/vmmtest"
)

// fakeDaemon is the daemon's method table over a real store, a real rpc
// server on a socket in t.TempDir() and the fake VMM driver: its failure
// paths are tested as a client sees them, with nothing mocked but the VMM
// and the guest.
type fakeDaemon struct {
	d      *Daemon
	st     *store.Store
	drv    *vmmtest.Driver
	client *rpc.Client
	paths  paths.User
	agents sync.Map // vm id → *vmmtest.Agent
}

func newFakeDaemon(t *testing.T) *fakeDaemon {
	t.Helper()
	ctx := t.Context()
	home := t.TempDir()
	p := testutil.UserPaths(t, home)
	if err := p.Ensure(); err != nil {
		t.Fatal(err)
	}
	lg := slog.New(slog.DiscardHandler)
	st, err := store.Open(ctx, p.StoreFile(), lg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	life, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	now := time.Now
	f := &fakeDaemon{st: st, paths: p}
	f.drv = vmmtest.New(t, model.VMMQEMU, nil)
	d := &Daemon{opts: Options{Paths: p, Now: now}, log: lg, paths: p, store: st, ops: opstate.New(now),
		startedAt: now(), stop: cancel, events: events.New(now, 0)}
	st.ObserveVMs(d.observeVM)
	initrd := filepath.Join(home, "initrd")
	if err := os.WriteFile(initrd, []byte("fake"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.vms = vmlife.New(life, vmlife.Deps{
		Store: st, Paths: p, Log: lg, Events: d.events,
		Drivers: map[model.VMMKind]vmm.Driver{model.VMMQEMU: f.drv},
		Select: func(ctx context.Context, pref model.VMMKind) (vmm.Driver, error) {
			if pref == "" || pref == "auto" || pref == model.VMMQEMU {
				return f.drv, nil
			}
			return nil, fmt.Errorf("%w: %s is not installed", vmm.ErrUnavailable, pref)
		},
		Initramfs: func(context.Context, model.Kernel) (string, error) { return initrd, nil },
		DialAgent: func(ep vmm.AgentEndpoint) (vmlife.Agent, error) {
			return f.agent(filepath.Base(filepath.Dir(ep.SocketPath))), nil
		},
		HostCPUs: 2, HostMemoryMiB: 4096,
		ReadyTimeout: 5 * time.Second,
	})
	t.Cleanup(d.vms.Close)
	f.d = d

	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := rpc.NewServer(d.methods(), rpc.ServerOptions{Logger: lg, Authorize: authorizeOwner, Hooks: rpc.Hooks{Start: d.trackOperation}})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(life, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	f.client = rpc.NewClient(sock)

	// A kernel for qemu, one only firecracker boots, and a small real ext4
	// image (the create chain clones and grows it).
	kernel := filepath.Join(home, "vmlinuz")
	if err := os.WriteFile(kernel, []byte("fake"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, k := range []model.Kernel{
		{Name: "debian-cloud", Path: kernel, VMMs: []model.VMMKind{model.VMMQEMU}},
		{Name: "fc-only", Path: kernel, VMMs: []model.VMMKind{model.VMMFirecracker}},
	} {
		if _, err := st.PutKernel(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(home, "img.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 (e2fsprogs, installed by scripts/deps.sh): %v %s", err, out)
	}
	if _, err := st.PutImage(ctx, model.Image{Name: "debian-bookworm", Path: img, SizeBytes: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakeDaemon) agent(id string) *vmmtest.Agent {
	a := vmmtest.NewAgent(f.drv.Log(), id, func() string {
		vm, err := f.st.GetVM(context.Background(), id)
		if err != nil {
			return ""
		}
		return vm.BootID
	})
	got, _ := f.agents.LoadOrStore(id, a)
	return got.(*vmmtest.Agent)
}

// call makes one API call and returns its wire error (nil or *api.Error).
func (f *fakeDaemon) call(t *testing.T, opID, method string, params, out any) *api.Error {
	t.Helper()
	err := f.client.CallRaw(rpc.WithOpID(t.Context(), opID), method, params, out)
	if err == nil {
		return nil
	}
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Fatalf("%s: error %T %v is not an api error", method, err, err)
	}
	if ae.OpID != opID {
		t.Fatalf("%s: error lost its op_id: %+v", method, ae)
	}
	return ae
}

// noLeftovers checks a failed request left no VM record and no VM dir.
func (f *fakeDaemon) noLeftovers(t *testing.T, what string) {
	t.Helper()
	vms, err := f.st.ListVMs(t.Context())
	if err != nil || len(vms) != 0 {
		t.Fatalf("%s left vm records: %+v %v", what, vms, err)
	}
	ents, _ := os.ReadDir(filepath.Dir(f.paths.VMDir("x")))
	if len(ents) != 0 {
		t.Fatalf("%s left vm dirs: %v", what, ents)
	}
	if ops, _ := f.st.ListOperations(t.Context()); len(ops) != 0 {
		t.Fatalf("%s left journal rows: %+v", what, ops)
	}
}

// TestDaemonErrorsOnTheWire: each refusal reaches the client with its
// code, its op_id and a message saying what was wrong and what to do, and
// leaves nothing behind.
func TestDaemonErrorsOnTheWire(t *testing.T) {
	f := newFakeDaemon(t)
	cases := []struct {
		name, method string
		params       any
		code, want   string
	}{
		{"get missing", api.MethodVMGet.Name, api.VMRef{Name: "ghost"}, api.CodeNotFound, `vm "ghost" not found (banger vm ls`},
		{"start missing", api.MethodVMStart.Name, api.VMRef{Name: "ghost"}, api.CodeNotFound, `vm "ghost" not found`},
		{"stop missing", api.MethodVMStop.Name, api.VMStop{Name: "ghost"}, api.CodeNotFound, `vm "ghost" not found`},
		{"rm missing", api.MethodVMRemove.Name, api.VMRemove{Name: "ghost", Force: true}, api.CodeNotFound, `vm "ghost" not found`},
		{"logs missing", api.MethodVMLogs.Name, api.VMLogs{Name: "ghost"}, api.CodeNotFound, `vm "ghost" not found`},
		{"bad name", api.MethodVMCreate.Name, api.VMCreate{Name: "../etc"}, api.CodeInvalidArgument, "name"},
		{"no image", api.MethodVMCreate.Name, api.VMCreate{Name: "a", Image: "nope"}, api.CodeNotFound, "banger image build"},
		{"no kernel", api.MethodVMCreate.Name, api.VMCreate{Name: "a", Kernel: "nope"}, api.CodeNotFound, "banger kernel pull nope"},
		{"kernel for another vmm", api.MethodVMCreate.Name, api.VMCreate{Name: "a", Kernel: "fc-only"}, api.CodeFailedPrecondition, "pick another --kernel or --vmm"},
		{"vmm unavailable", api.MethodVMCreate.Name, api.VMCreate{Name: "a", VMM: model.VMMFirecracker}, api.CodeFailedPrecondition, "firecracker is not installed"},
		{"too many cpus", api.MethodVMCreate.Name, api.VMCreate{Name: "a", CPUs: 64}, api.CodeInvalidArgument, "--cpus 64 is outside 1..2"},
		{"too little memory", api.MethodVMCreate.Name, api.VMCreate{Name: "a", MemoryMiB: 16}, api.CodeInvalidArgument, "--memory 16 MiB"},
		{"disk smaller than image", api.MethodVMCreate.Name, api.VMCreate{Name: "a", DiskBytes: 1 << 20}, api.CodeInvalidArgument, "ask for at least the image's size"},
		{"unknown init mode", api.MethodVMCreate.Name, api.VMCreate{Name: "a", InitMode: "sysv"}, api.CodeInvalidArgument, "use fast or image"},
		{"unknown network", api.MethodVMCreate.Name, api.VMCreate{Name: "a", Network: "bridged"}, api.CodeInvalidArgument, "use isolated"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ae := f.call(t, fmt.Sprintf("op-%d", i), c.method, c.params, nil)
			if ae == nil {
				t.Fatalf("%s succeeded", c.method)
			}
			if ae.Code != c.code || !strings.Contains(ae.Message, c.want) {
				t.Fatalf("%s: %+v; want %s with %q", c.method, ae, c.code, c.want)
			}
			f.noLeftovers(t, c.name)
		})
	}
}

// TestDaemonCreateRunSemantics: vm create --start whose boot fails removes
// the VM whole (record, dir, journal) and says at which step; one that
// boots is running, and a second create of the same name is refused.
func TestDaemonCreateRunSemantics(t *testing.T) {
	f := newFakeDaemon(t)
	f.drv.Fail(vmmtest.MethodStart, fmt.Errorf("%w: qemu exited: could not open disk", vmm.ErrUnavailable))
	ae := f.call(t, "op-run-fail", api.MethodVMCreate.Name, api.VMCreate{Name: "r1", Start: true}, nil)
	if ae == nil || ae.Code != api.CodeFailedPrecondition || !strings.Contains(ae.Message, "step vmm") || !strings.Contains(ae.Message, "could not open disk") {
		t.Fatalf("failed run: %+v", ae)
	}
	f.noLeftovers(t, "a failed vm run")

	f.drv.Fail(vmmtest.MethodStart, nil)
	var vm model.VM
	if ae := f.call(t, "op-run", api.MethodVMCreate.Name, api.VMCreate{Name: "r1", Start: true, DiskBytes: 16 << 20}, &vm); ae != nil {
		t.Fatal(ae)
	}
	if vm.State != model.StateRunning || vm.DiskBytes != 16<<20 {
		t.Fatalf("created vm: %+v", vm)
	}
	// The clone of the image was grown to the asked size.
	if st, err := os.Stat(filepath.Join(vm.Dir, "root.ext4")); err != nil || st.Size() != 16<<20 {
		t.Fatalf("root disk: %v %v", st, err)
	}
	ae = f.call(t, "op-dup", api.MethodVMCreate.Name, api.VMCreate{Name: "r1"}, nil)
	if ae == nil || ae.Code != api.CodeAlreadyExists || !strings.Contains(ae.Message, "banger vm rm r1") {
		t.Fatalf("duplicate name: %+v", ae)
	}
	// rm of a running VM without --force is refused and changes nothing.
	ae = f.call(t, "op-rm", api.MethodVMRemove.Name, api.VMRemove{Name: "r1"}, nil)
	if ae == nil || ae.Code != api.CodeFailedPrecondition || !strings.Contains(ae.Message, "banger vm rm -f r1") {
		t.Fatalf("rm of a running vm: %+v", ae)
	}
	if pids := f.drv.Running(); len(pids) != 1 {
		t.Fatalf("refused rm changed the vmm: %v", pids)
	}
	if ae := f.call(t, "op-rmf", api.MethodVMRemove.Name, api.VMRemove{Name: "r1", Force: true}, nil); ae != nil {
		t.Fatal(ae)
	}
	f.noLeftovers(t, "vm rm -f")
	if pids := f.drv.Running(); len(pids) != 0 {
		t.Fatalf("vmm after rm -f: %v", pids)
	}
}

// TestDaemonVMLockContention: concurrent starts of one VM are serialised
// by its lock: one VMM is started and every caller gets the running VM.
func TestDaemonVMLockContention(t *testing.T) {
	f := newFakeDaemon(t)
	if ae := f.call(t, "op-c", api.MethodVMCreate.Name, api.VMCreate{Name: "busy"}, nil); ae != nil {
		t.Fatal(ae)
	}
	const n = 4
	var wg sync.WaitGroup
	errs := make([]*api.Error, n)
	got := make([]model.VM, n)
	for i := range n {
		wg.Go(func() {
			err := f.client.CallRaw(rpc.WithOpID(context.Background(), fmt.Sprintf("op-s%d", i)), api.MethodVMStart.Name, api.VMRef{Name: "busy"}, &got[i])
			if err != nil {
				errors.As(err, &errs[i])
			}
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || got[i].State != model.StateRunning || got[i].PID != got[0].PID {
			t.Fatalf("start %d: %+v, %+v (first pid %d)", i, errs[i], got[i], got[0].PID)
		}
	}
	if c := f.drv.Log().Count(vmmtest.MethodStart); c != 1 {
		t.Fatalf("concurrent starts started %d vmms, want 1", c)
	}
	if ops, _ := f.st.ListOperations(t.Context()); len(ops) != 0 {
		t.Fatalf("journal after the starts: %+v", ops)
	}
}

// TestDaemonStateLockContention: a second daemon on the same state dir
// is refused with the holder's pid and the way out; the lock is free
// again once released.
func TestDaemonStateLockContention(t *testing.T) {
	dir := t.TempDir()
	lockPath, pidPath := filepath.Join(dir, "bangerd.lock"), filepath.Join(dir, "bangerd.pid")
	l, err := acquireLock(lockPath, pidPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := writePidFile(pidPath); err != nil {
		t.Fatal(err)
	}
	_, err = acquireLock(lockPath, pidPath)
	if !errors.Is(err, ErrAlreadyRunning) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) ||
		!strings.Contains(err.Error(), "banger daemon stop") {
		t.Fatalf("second lock: %v", err)
	}
	l.release()
	l2, err := acquireLock(lockPath, pidPath)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	l2.release()
}
