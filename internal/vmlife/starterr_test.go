package vmlife_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/testutil"
	"github.com/bangerdev/banger/internal/vmlife"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/qemu"
)

// startFixture is a manager with the real QEMU driver and a real store
// holding one stopped VM, whose kernel file is given by kernelPath.
type startFixture struct {
	m     *vmlife.Manager
	store *store.Store
	vm    model.VM
}

func newStartFixture(t *testing.T, kernelPath string, initramfs func(ctx context.Context, k model.Kernel) (string, error)) *startFixture {
	t.Helper()
	testutil.RequireQEMU(t)
	ctx := context.Background()
	dir := t.TempDir()
	p := testutil.UserPaths(t, dir)
	if err := p.Ensure(); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, p.StoreFile(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.PutKernel(ctx, model.Kernel{Name: "k1", Path: kernelPath, VMMs: []model.VMMKind{model.VMMQEMU}}); err != nil {
		t.Fatal(err)
	}
	id, err := model.NewVMID()
	if err != nil {
		t.Fatal(err)
	}
	vm := model.VM{ID: id, Name: "boom", State: model.StateStopped, Image: "img", Kernel: "k1", VMM: model.VMMQEMU,
		CPUs: 1, MemoryMiB: 128, InitMode: model.InitFast, Dir: p.VMDir(id)}
	if err := os.MkdirAll(vm.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vm.Dir, "root.ext4"), make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if vm, err = st.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	m := vmlife.New(ctx, vmlife.Deps{
		Store: st, Paths: p, Log: slog.New(slog.DiscardHandler),
		Drivers:      map[model.VMMKind]vmm.Driver{model.VMMQEMU: qemu.New(qemu.Config{})},
		Initramfs:    initramfs,
		ReadyTimeout: 10 * time.Second,
	})
	return &startFixture{m: m, store: st, vm: vm}
}

func fileInitramfs(t *testing.T) func(context.Context, model.Kernel) (string, error) {
	path := filepath.Join(t.TempDir(), "initrd")
	if err := os.WriteFile(path, []byte("not really an initramfs"), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(context.Context, model.Kernel) (string, error) { return path, nil }
}

// serveStart serves vm.start from m on a real rpc server and returns a client.
func serveStart(t *testing.T, m *vmlife.Manager) *rpc.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ms := rpc.NewMethods()
	rpc.Register(ms, api.MethodVMStart, func(ctx context.Context, c *rpc.Call, p api.VMRef) (model.VM, error) {
		return m.Start(ctx, p.Name, c.ProgressFunc())
	})
	srv := rpc.NewServer(ms, rpc.ServerOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return rpc.NewClient(sock)
}

// A spec the driver refuses (the kernel file is missing) fails the boot at
// the initramfs step; the failure keeps its chain in-process and reaches a
// client as invalid_argument, not internal.
func TestStartErrorKeepsInvalidSpec(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-vmlinuz")
	f := newStartFixture(t, missing, fileInitramfs(t))
	ctx := context.Background()

	_, err := f.m.Start(ctx, f.vm.Name, nil)
	if err == nil {
		t.Fatal("start with a missing kernel file succeeded")
	}
	var se *vmm.StepError
	if !errors.As(err, &se) || se.Step != "initramfs" {
		t.Fatalf("errors.As(StepError) = %v (%+v); err: %v", errors.As(err, &se), se, err)
	}
	if !errors.Is(err, vmm.ErrInvalidSpec) {
		t.Fatalf("errors.Is(err, vmm.ErrInvalidSpec) is false: %v", err)
	}
	var start *vmlife.StartError
	if !errors.As(err, &start) || start.Step != "initramfs" || start.VM != f.vm.Name {
		t.Fatalf("errors.As(StartError) = %+v; err: %v", start, err)
	}
	if got := api.CodeOf(err); got != api.CodeInvalidArgument {
		t.Fatalf("code = %s, want %s (err: %v)", got, api.CodeInvalidArgument, err)
	}
	if !strings.Contains(err.Error(), `start vm "boom"`) || !strings.Contains(err.Error(), "kernel") {
		t.Fatalf("message does not say what failed: %q", err)
	}
	vm, gerr := f.store.GetVM(ctx, f.vm.ID)
	if gerr != nil || vm.State != model.StateError || !strings.Contains(vm.StateReason, "initramfs") {
		t.Fatalf("vm after failed start: state %s reason %q err %v", vm.State, vm.StateReason, gerr)
	}

	// Over the wire the client gets the code and the op_id, and the message
	// names the step.
	c := serveStart(t, f.m)
	_, err = rpc.Invoke(rpc.WithOpID(ctx, "op-start-spec"), c, api.MethodVMStart, api.VMRef{Name: f.vm.Name})
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Fatalf("wire error is %T %v, want *api.Error", err, err)
	}
	if ae.Code != api.CodeInvalidArgument || ae.OpID != "op-start-spec" || !strings.Contains(ae.Message, "step initramfs") {
		t.Fatalf("wire error = %+v, want invalid_argument with op_id and step", ae)
	}
}

// A typed API error raised inside a boot step keeps its code on the wire.
func TestStartErrorKeepsAPICode(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "vmlinuz")
	f := newStartFixture(t, missing, func(context.Context, model.Kernel) (string, error) {
		return "", api.Errorf(api.CodeFailedPrecondition, "kernel %q has no modules: import it again with --modules", "k1")
	})
	ctx := context.Background()
	_, err := f.m.Start(ctx, f.vm.Name, nil)
	if got := api.CodeOf(err); got != api.CodeFailedPrecondition {
		t.Fatalf("in-process code = %s, want %s (err: %v)", got, api.CodeFailedPrecondition, err)
	}
	c := serveStart(t, f.m)
	_, err = rpc.Invoke(ctx, c, api.MethodVMStart, api.VMRef{Name: f.vm.Name})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeFailedPrecondition || !strings.Contains(ae.Message, "has no modules") {
		t.Fatalf("wire error = %#v, want failed_precondition naming the cause", err)
	}
}

// A start cancelled by its caller says so: errors.Is(context.Canceled)
// holds and the code is canceled.
func TestStartErrorKeepsCanceled(t *testing.T) {
	entered := make(chan struct{})
	f := newStartFixture(t, filepath.Join(t.TempDir(), "vmlinuz"), func(ctx context.Context, _ model.Kernel) (string, error) {
		close(entered)
		<-ctx.Done()
		return "", ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
		}
		cancel()
	}()
	_, err := f.m.Start(ctx, f.vm.Name, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("errors.Is(err, context.Canceled) is false: %v", err)
	}
	if got := api.CodeOf(err); got != api.CodeCanceled {
		t.Fatalf("code = %s, want %s", got, api.CodeCanceled)
	}
	var se *vmm.StepError
	if !errors.As(err, &se) || se.Step != "initramfs" {
		t.Fatalf("errors.As(StepError): %+v, err %v", se, err)
	}
}
