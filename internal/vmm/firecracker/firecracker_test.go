package firecracker

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/firecracker-microvm/firecracker-go-sdk"
	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"
	ops "github.com/firecracker-microvm/firecracker-go-sdk/client/operations"
	"github.com/firecracker-microvm/firecracker-go-sdk/fctesting"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/jailer"
	"github.com/bangerdev/banger/internal/kvmprobe"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/vmm"
)

// recorder is the SDK's mock API client, recording every configuring call.
type recorder struct {
	mu     sync.Mutex
	calls  []string
	drives []models.Drive
	nic    *models.NetworkInterface
	vsock  *models.Vsock
	boot   *models.BootSource
	mc     *models.MachineConfiguration
}

func (r *recorder) add(c string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
}

func (r *recorder) client() *fctesting.MockClient {
	return &fctesting.MockClient{
		GetMachineConfigurationFn: func(*ops.GetMachineConfigurationParams) (*ops.GetMachineConfigurationOK, error) {
			return &ops.GetMachineConfigurationOK{Payload: &models.MachineConfiguration{VcpuCount: sdk.Int64(2), MemSizeMib: sdk.Int64(512)}}, nil
		},
		PutMachineConfigurationFn: func(p *ops.PutMachineConfigurationParams) (*ops.PutMachineConfigurationNoContent, error) {
			r.add("PutMachineConfiguration")
			r.mc = p.Body
			return &ops.PutMachineConfigurationNoContent{}, nil
		},
		PutGuestBootSourceFn: func(p *ops.PutGuestBootSourceParams) (*ops.PutGuestBootSourceNoContent, error) {
			r.add("PutGuestBootSource")
			r.boot = p.Body
			return &ops.PutGuestBootSourceNoContent{}, nil
		},
		PutGuestDriveByIDFn: func(p *ops.PutGuestDriveByIDParams) (*ops.PutGuestDriveByIDNoContent, error) {
			r.add("PutGuestDriveByID:" + p.DriveID)
			r.drives = append(r.drives, *p.Body)
			return &ops.PutGuestDriveByIDNoContent{}, nil
		},
		PutGuestNetworkInterfaceByIDFn: func(p *ops.PutGuestNetworkInterfaceByIDParams) (*ops.PutGuestNetworkInterfaceByIDNoContent, error) {
			r.add("PutGuestNetworkInterfaceByID")
			r.nic = p.Body
			return &ops.PutGuestNetworkInterfaceByIDNoContent{}, nil
		},
		PutGuestVsockFn: func(p *ops.PutGuestVsockParams) (*ops.PutGuestVsockNoContent, error) {
			r.add("PutGuestVsock")
			r.vsock = p.Body
			return &ops.PutGuestVsockNoContent{}, nil
		},
		PutMmdsConfigFn: func(*ops.PutMmdsConfigParams) (*ops.PutMmdsConfigNoContent, error) {
			r.add("PutMmdsConfig")
			return &ops.PutMmdsConfigNoContent{}, nil
		},
		CreateSyncActionFn: func(p *ops.CreateSyncActionParams) (*ops.CreateSyncActionNoContent, error) {
			r.add("CreateSyncAction:" + *p.Info.ActionType)
			return &ops.CreateSyncActionNoContent{}, nil
		},
	}
}

func hostFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeExec(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// fakeVMLinux writes the start of an x86-64 ELF.
func fakeVMLinux(t *testing.T, path string) {
	t.Helper()
	h := make([]byte, 64)
	copy(h, "\x7fELF")
	h[4], h[5] = 2, 1
	binary.LittleEndian.PutUint16(h[18:], 62)
	if err := os.WriteFile(path, h, 0o644); err != nil {
		t.Fatal(err)
	}
}

type fixture struct {
	d        *Driver
	rec      *recorder
	spec     vmm.Spec
	argsFile string
}

func newFixture(t *testing.T, version string) fixture {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	argsFile := filepath.Join(dir, "jailer-args")
	writeExec(t, filepath.Join(bin, "firecracker"), `echo "Firecracker `+version+`"; echo; echo "Supported snapshot data format versions: v1.0.0"`)
	// The fake jailer records its arguments and stays alive like firecracker.
	writeExec(t, filepath.Join(bin, "jailer"), `printf '%s\n' "$@" > `+argsFile+`; exec sleep 300`)
	vmDir := filepath.Join(dir, "vm")
	if err := os.Mkdir(vmDir, 0o755); err != nil {
		t.Fatal(err)
	}
	kernel := filepath.Join(dir, "vmlinux")
	fakeVMLinux(t, kernel)
	files := map[string]string{"initrd": "initrd.img", "root": "root.ext4", "config": "config.img"}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rec := &recorder{}
	d := New(Config{
		Jailer: jailer.Config{FirecrackerBinary: filepath.Join(bin, "firecracker"), JailerBinary: filepath.Join(bin, "jailer"),
			ChrootBase: filepath.Join(dir, "jail"), CgroupVersion: "2"},
		UID: 1234, GID: 1235,
		StartTimeout: 20 * time.Second,
		clientOpts:   []sdk.ClientOpt{sdk.WithOpsClient(rec.client())},
		KVMDevice:    "/dev/null", // a character device: the host's KVM is not what these tests are about
		mountinfo:    hostFile(t, dir, "mountinfo", "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"),
		passwd:       hostFile(t, dir, "passwd", "root:x:0:0::/root:/bin/sh\n"),
		group:        hostFile(t, dir, "group", "root:x:0:\n"),
	})
	spec := vmm.Spec{
		ID: "vm-1", Name: "one", Dir: vmDir,
		Kernel: vmm.Kernel{VMLinux: kernel, Cmdline: "banger.cfg=vdb"},
		Initrd: filepath.Join(dir, "initrd.img"),
		Disks:  []vmm.Disk{{ID: "root", Path: filepath.Join(dir, "root.ext4")}, {ID: "config", Path: filepath.Join(dir, "config.img"), ReadOnly: true}},
		Net:    &vmm.Net{Tap: "tap-vm1", MAC: "06:00:ac:10:00:02"},
		CPUs:   2, MemoryMiB: 512,
		Agent: vmm.Agent{Transport: model.TransportVsock, VsockCID: 42, VsockPort: 1024},
	}
	return fixture{d: d, rec: rec, spec: spec, argsFile: argsFile}
}

// TestStartAPISequence boots through the SDK's handler chain against the
// mock API with jailer, root and config disks, tap and vsock, and checks
// what reaches Firecracker, in order.
func TestStartAPISequence(t *testing.T) {
	f := newFixture(t, "v1.7.0")
	// What the real jailer does before firecracker serves: the chroot and
	// the API socket inside it.
	root := f.d.jailRoot(f.spec.ID)
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(root, "api.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	inst, err := f.d.Start(ctx, f.spec)
	cancel() // the start-up deadline is not the VM's lifetime
	if err != nil {
		t.Fatal(err)
	}
	defer f.d.Kill(context.Background(), inst)

	want := []string{
		"PutMachineConfiguration",
		"PutGuestBootSource",
		"PutGuestDriveByID:root",
		"PutGuestDriveByID:config",
		"PutGuestNetworkInterfaceByID",
		"PutGuestVsock",
		"CreateSyncAction:InstanceStart",
	}
	got := slicesWithout(f.rec.calls, "PutMmdsConfig")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("api calls:\n got %v\nwant %v", got, want)
	}
	if *f.rec.mc.VcpuCount != 2 || *f.rec.mc.MemSizeMib != 512 {
		t.Errorf("machine config %+v", f.rec.mc)
	}
	// Under the jailer the SDK links files into the chroot and names them
	// relative to it.
	if *f.rec.boot.KernelImagePath != "vmlinux" || f.rec.boot.InitrdPath != "initrd.img" ||
		!containsAll(f.rec.boot.BootArgs, strings.Fields(BaseCmdline+" banger.cfg=vdb")...) {
		t.Errorf("boot source %+v", f.rec.boot)
	}
	if !*f.rec.drives[0].IsRootDevice || *f.rec.drives[0].PathOnHost != "root.ext4" || *f.rec.drives[0].IsReadOnly ||
		*f.rec.drives[1].IsRootDevice || !*f.rec.drives[1].IsReadOnly {
		t.Errorf("drives %+v %+v", f.rec.drives[0], f.rec.drives[1])
	}
	for _, name := range []string{"vmlinux", "initrd.img", "root.ext4", "config.img"} {
		if _, err := os.Stat(filepath.Join(root, name)); err != nil {
			t.Errorf("%s not linked into the jail: %v", name, err)
		}
	}
	if *f.rec.nic.HostDevName != "tap-vm1" || f.rec.nic.GuestMac != "06:00:ac:10:00:02" {
		t.Errorf("nic %+v", f.rec.nic)
	}
	if *f.rec.vsock.GuestCid != 42 || *f.rec.vsock.UdsPath != "vsock.sock" {
		t.Errorf("vsock %+v", f.rec.vsock)
	}

	// The jailer was launched detached with the per-VM jail settings (the
	// test made the socket itself, so the script may still be writing).
	var b []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, err = os.ReadFile(f.argsFile)
		if err == nil && strings.Contains(string(b), "/api.sock") || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Join(strings.Fields(string(b)), " ")
	for _, w := range []string{"--id vm-1", "--uid 1234", "--gid 1235", "--exec-file " + f.d.cfg.Jailer.FirecrackerBinary,
		"--cgroup-version 2", "--chroot-base-dir " + f.d.cfg.Jailer.ChrootBase, "-- --api-sock /api.sock"} {
		if !strings.Contains(args, w) {
			t.Errorf("jailer args lack %q: %s", w, args)
		}
	}
	if strings.Contains(args, "--daemonize") || strings.Contains(args, "--no-seccomp") {
		t.Errorf("jailer args: %s", args)
	}
	if sid, err := unix.Getsid(inst.PID); err != nil || sid != inst.PID {
		t.Errorf("vmm not in its own session: sid %d err %v", sid, err)
	}
	if ok, reason := f.d.Alive(inst); !ok {
		t.Fatalf("vmm died once start-up ctx ended: %s", reason)
	}
	if inst.Agent.Kind != vmm.AgentHybridVsock || inst.Agent.SocketPath != filepath.Join(root, "vsock.sock") || inst.Agent.Port != 1024 {
		t.Errorf("agent %+v", inst.Agent)
	}

	// Re-adoption by a fresh driver, then a stop that leaves nothing.
	fresh := New(f.d.cfg)
	if err := fresh.Adopt(context.Background(), inst); err != nil {
		t.Fatalf("adopt: %v", err)
	}
	if err := fresh.Stop(context.Background(), inst, true, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if got := f.rec.calls[len(f.rec.calls)-1]; got != "CreateSyncAction:SendCtrlAltDel" {
		t.Errorf("graceful stop sent %s", got)
	}
	if ok, _ := f.d.Alive(inst); ok {
		t.Fatal("vmm survived stop")
	}
	if _, err := os.Stat(f.d.jailDir(f.spec.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("jail left behind: %v", err)
	}
}

func slicesWithout(s []string, drop string) []string {
	var out []string
	for _, v := range s {
		if v != drop {
			out = append(out, v)
		}
	}
	return out
}

// TestStartFailureLeavesNothing: the VMM never opens its API socket.
func TestStartFailureLeavesNothing(t *testing.T) {
	f := newFixture(t, "v1.7.0")
	f.d.cfg.StartTimeout = 500 * time.Millisecond
	_, err := f.d.Start(context.Background(), f.spec)
	var se *vmm.StepError
	if !errors.As(err, &se) || se.Step != StepConfigure || !strings.Contains(err.Error(), "not answering") {
		t.Fatalf("got %v", err)
	}
	b, _ := os.ReadFile(f.argsFile)
	if len(b) == 0 {
		t.Fatal("jailer never ran")
	}
	if _, err := os.Stat(f.d.jailDir(f.spec.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("jail left behind: %v", err)
	}
	assertNoProcessWith(t, f.argsFile)
}

func assertNoProcessWith(t *testing.T, needle string) {
	t.Helper()
	matches, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err == nil && strings.Contains(string(b), needle) && !strings.Contains(string(b), "go test") {
			if st, _ := os.ReadFile(filepath.Join(filepath.Dir(m), "stat")); !strings.Contains(string(st), ") Z ") {
				t.Fatalf("process left: %s %q", m, b)
			}
		}
	}
}

func TestForwardSignalsEmptyNonNil(t *testing.T) {
	f := newFixture(t, "v1.7.0")
	cfg := f.d.BuildConfig(f.spec)
	if cfg.ForwardSignals == nil || len(cfg.ForwardSignals) != 0 {
		t.Fatalf("ForwardSignals = %#v, want empty and non-nil", cfg.ForwardSignals)
	}
	if !cfg.Seccomp.Enabled || cfg.JailerCfg == nil || cfg.JailerCfg.Daemonize {
		t.Fatalf("config %+v", cfg)
	}
	// The SDK keeps it as given (nil would become its default signal list).
	m, err := sdk.NewMachine(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m.Cfg.ForwardSignals == nil || len(m.Cfg.ForwardSignals) != 0 {
		t.Fatalf("sdk machine forwards %v", m.Cfg.ForwardSignals)
	}
}

func TestVersionRange(t *testing.T) {
	for out, ok := range map[string]bool{"Firecracker v1.4.0\n": true, "Firecracker v1.12.1": true,
		"Firecracker v1.3.9": false, "Firecracker v2.0.0": false, "firecracker 1.5": false} {
		f := newFixture(t, "x")
		writeExec(t, f.d.cfg.Jailer.FirecrackerBinary, "echo '"+out+"'")
		err := f.d.Available(context.Background())
		if (err == nil) != ok {
			t.Errorf("%q: available=%v, want %v (%v)", out, err == nil, ok, err)
		}
		if err != nil && !errors.Is(err, vmm.ErrUnavailable) {
			t.Errorf("%q: %v is not ErrUnavailable", out, err)
		}
	}
	if v, err := ParseVersion("Firecracker v1.7.0\n\nSupported snapshot data format versions: v1.0.0"); err != nil || v != (Version{1, 7, 0}) {
		t.Fatalf("parse: %v %v", v, err)
	}
}

func TestValidate(t *testing.T) {
	f := newFixture(t, "v1.7.0")
	if err := f.d.Validate(f.spec); err != nil {
		t.Fatalf("good spec: %v", err)
	}
	bz := filepath.Join(t.TempDir(), "bzImage")
	h := make([]byte, 0x210)
	copy(h[0x202:], "HdrS")
	if err := os.WriteFile(bz, h, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(s *vmm.Spec){
		"bzImage":       func(s *vmm.Spec) { s.Kernel.VMLinux = bz },
		"no vmlinux":    func(s *vmm.Spec) { s.Kernel.VMLinux = "" },
		"serial agent":  func(s *vmm.Spec) { s.Agent = vmm.Agent{Transport: model.TransportVirtioSerial, PortName: "x"} },
		"cid 2":         func(s *vmm.Spec) { s.Agent.VsockCID = 2 },
		"underscore id": func(s *vmm.Spec) { s.ID = "vm_1" },
		"no root disk":  func(s *vmm.Spec) { s.Disks = nil },
		"same basename": func(s *vmm.Spec) { s.Disks = append(s.Disks, vmm.Disk{ID: "x", Path: s.Disks[0].Path}) },
		"bad tap":       func(s *vmm.Spec) { s.Net = &vmm.Net{Tap: "a b", MAC: "06:00:00:00:00:01"} },
		"zero cpus":     func(s *vmm.Spec) { s.CPUs = 0 },
		"shares":        func(s *vmm.Spec) { s.Shares = []vmm.Share{{Tag: "banger0", Source: "/home/u/proj"}} },
	}
	for name, mutate := range cases {
		s := f.spec
		s.Disks = append([]vmm.Disk(nil), f.spec.Disks...)
		mutate(&s)
		if err := f.d.Validate(s); !errors.Is(err, vmm.ErrInvalidSpec) {
			t.Errorf("%s: want ErrInvalidSpec, got %v", name, err)
		}
	}
}

// TestSelect covers vmm.Select with the real drivers' capabilities.
func TestSelect(t *testing.T) {
	f := newFixture(t, "v1.7.0")
	q := fakeQEMU{}
	pvm := kvmprobe.Result{Accel: "tcg", Reason: "KVM is PVM (paravirtual nested): cannot run a standard kernel"}
	kvm := kvmprobe.Result{Usable: true, Accel: "kvm"}
	ctx := context.Background()
	if d, err := vmm.Select(ctx, "auto", kvm, f.d, q); err != nil || d.Name() != "firecracker" {
		t.Fatalf("auto with kvm: %v %v", d, err)
	}
	if d, err := vmm.Select(ctx, "auto", pvm, f.d, q); err != nil || d.Name() != "qemu" {
		t.Fatalf("auto on pvm: %v %v", d, err)
	}
	if _, err := vmm.Select(ctx, "firecracker", pvm, f.d, q); err == nil || !strings.Contains(err.Error(), "PVM") {
		t.Fatalf("explicit firecracker on pvm: %v", err)
	}
	missing := New(Config{Jailer: jailer.Config{FirecrackerBinary: "/nonexistent/firecracker", ChrootBase: "/x"}})
	if d, err := vmm.Select(ctx, "auto", kvm, missing, q); err != nil || d.Name() != "qemu" {
		t.Fatalf("auto without firecracker: %v %v", d, err)
	}
	if _, err := vmm.Select(ctx, "firecracker", kvm, missing, q); !errors.Is(err, vmm.ErrUnavailable) {
		t.Fatalf("explicit firecracker, not installed: %v", err)
	}
	if _, err := vmm.Select(ctx, "xen", kvm, f.d, q); err == nil {
		t.Fatal("unknown driver accepted")
	}
}

// fakeQEMU stands in for the qemu driver (importing it here would be a
// test-only dependency between sibling drivers).
type fakeQEMU struct{ vmm.Driver }

func (fakeQEMU) Name() model.VMMKind                 { return model.VMMQEMU }
func (fakeQEMU) Capabilities() vmm.Capabilities      { return vmm.Capabilities{} }
func (fakeQEMU) Available(ctx context.Context) error { return nil }

// containsAll: the SDK re-orders kernel arguments (it parses them into a map).
func containsAll(cmdline string, args ...string) bool {
	have := strings.Fields(cmdline)
	for _, a := range args {
		found := false
		for _, h := range have {
			found = found || h == a
		}
		if !found {
			return false
		}
	}
	return true
}

// TestValidateRefusesSharesNamingSync: no virtio-fs in Firecracker; the
// refusal points at banger vm sync.
func TestValidateRefusesSharesNamingSync(t *testing.T) {
	f := newFixture(t, "v1.7.0")
	s := f.spec
	s.Shares = []vmm.Share{{Tag: "banger0", Source: "/home/u/proj"}}
	if err := f.d.Validate(s); err == nil || !strings.Contains(err.Error(), "banger vm sync") {
		t.Fatalf("Validate with shares = %v, want a refusal naming banger vm sync", err)
	}
}

// TestAvailableChecksJailerNeeds: each unmet need of the jailer makes the
// driver unavailable with a reason naming what to change.
func TestAvailableChecksJailerNeeds(t *testing.T) {
	cases := map[string]struct {
		mutate func(f fixture)
		want   string
	}{
		"no kvm": {func(f fixture) { f.d.cfg.KVMDevice = "/nonexistent/kvm" }, "/nonexistent/kvm"},
		"cgroup v1": {func(f fixture) {
			os.WriteFile(f.d.cfg.mountinfo, []byte("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"), 0o644)
		}, `set it to "1"`},
		"uid of a user": {func(f fixture) {
			os.WriteFile(f.d.cfg.passwd, []byte("svc:x:"+strconv.Itoa(jailer.DefaultUIDStart)+":100::/:/bin/false\n"), 0o644)
		}, `user "svc"`},
		"no jailer": {func(f fixture) { os.Remove(f.d.cfg.Jailer.JailerBinary) }, "firecracker.jailer_binary"},
		"jailer not root's, root runs it": {func(f fixture) {
			os.Chown(f.d.cfg.Jailer.JailerBinary, 4242, 4242)
			f.d.launcher = NewHelperLauncher(nil)
		}, "not owned by root"},
	}
	for name, tc := range cases {
		f := newFixture(t, "v1.7.0")
		if err := f.d.Available(context.Background()); err != nil {
			t.Fatalf("%s: fixture unavailable: %v", name, err)
		}
		tc.mutate(f)
		err := f.d.Available(context.Background())
		if !errors.Is(err, vmm.ErrUnavailable) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrUnavailable naming %s", name, err, tc.want)
		}
	}
}
