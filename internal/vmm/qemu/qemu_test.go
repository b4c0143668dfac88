package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/testutil"
	"github.com/bangerdev/banger/internal/vmm"
)

const readyLine = "TEST-GUEST-READY"

// bootTimeout is generous: TCG on two cores shared with other test runs.
const bootTimeout = 120 * time.Second

var (
	initrdOnce sync.Once
	initrdPath string
	initrdErr  error
)

// testInitrd compiles testdata/guestinit statically and packs it as /init
// in a newc initramfs, once per test binary.
func testInitrd(t *testing.T) string {
	t.Helper()
	initrdOnce.Do(func() {
		dir, err := os.MkdirTemp("", "banger-qemu-test-")
		if err != nil {
			initrdErr = err
			return
		}
		bin := filepath.Join(dir, "init")
		cmd := exec.Command("go", "build", "-o", bin, "./testdata/guestinit")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if out, err := cmd.CombinedOutput(); err != nil {
			initrdErr = errors.New("build guest init: " + err.Error() + "\n" + string(out))
			return
		}
		initrdPath = filepath.Join(dir, "initrd.cpio")
		initrdErr = writeInitramfs(initrdPath, bin)
	})
	if initrdErr != nil {
		t.Fatal(initrdErr)
	}
	return initrdPath
}

func writeInitramfs(path, initBin string) error {
	body, err := os.ReadFile(initBin)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	w := cpio.NewWriter(&buf)
	entries := []struct {
		hdr  cpio.Header
		body []byte
	}{
		{cpio.Header{Name: "dev", Mode: cpio.TypeDir | 0o755}, nil},
		{cpio.Header{Name: "init", Mode: cpio.TypeReg | 0o755, Size: int64(len(body))}, body},
	}
	for _, e := range entries {
		if err := w.WriteHeader(&e.hdr); err != nil {
			return err
		}
		if _, err := w.Write(e.body); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if initrdPath != "" {
		os.RemoveAll(filepath.Dir(initrdPath))
	}
	os.Exit(code)
}

// testSpec returns a spec for the test guest in a fresh short VM dir (unix
// socket paths are limited to 107 bytes).
func testSpec(t *testing.T, kernel, initrd string) vmm.Spec {
	t.Helper()
	dir, err := os.MkdirTemp("", "bvm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	root := filepath.Join(dir, "root.img")
	if err := os.WriteFile(root, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.img")
	if err := os.WriteFile(cfg, make([]byte, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	return vmm.Spec{
		ID: "t" + strings.ToLower(strings.ReplaceAll(filepath.Base(dir), "_", "-")), Name: t.Name(), Dir: dir,
		Kernel: vmm.Kernel{Path: kernel}, Initrd: initrd,
		Disks: []vmm.Disk{{ID: "root", Path: root}, {ID: "config", Path: cfg, ReadOnly: true}},
		CPUs:  1, MemoryMiB: 256,
		Agent: vmm.Agent{Transport: model.TransportVirtioSerial, PortName: "banger.agent"},
	}
}

func newTestDriver(t *testing.T) *Driver {
	return New(Config{Accel: "tcg", StartTimeout: 60 * time.Second, StopTimeout: 20 * time.Second})
}

func waitConsole(t *testing.T, d *Driver, inst vmm.Instance, want string) {
	t.Helper()
	deadline := time.Now().Add(bootTimeout)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(inst.ConsoleLog)
		if err == nil && bytes.Contains(b, []byte(want)) {
			return
		}
		if ok, reason := d.Alive(inst); !ok {
			tail, _ := d.TailConsole(inst, 30)
			t.Fatalf("vm died before %q: %s; console:\n%s", want, reason, tail)
		}
		time.Sleep(100 * time.Millisecond)
	}
	tail, _ := d.TailConsole(inst, 30)
	t.Fatalf("no %q on the console after %s; console:\n%s", want, bootTimeout, tail)
}

// processesUsing lists pids whose command line mentions dir.
func processesUsing(t *testing.T, dir string) []string {
	t.Helper()
	matches, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []string
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err == nil && bytes.Contains(b, []byte(dir)) {
			pid := filepath.Base(filepath.Dir(m))
			if st, err := os.ReadFile("/proc/" + pid + "/stat"); err == nil && bytes.Contains(st, []byte(") Z ")) {
				continue
			}
			pids = append(pids, pid)
		}
	}
	return pids
}

func assertGone(t *testing.T, d *Driver, inst vmm.Instance, spec vmm.Spec) {
	t.Helper()
	if ok, _ := d.Alive(inst); ok {
		t.Fatalf("qemu %d still alive", inst.PID)
	}
	if pids := processesUsing(t, spec.Dir); len(pids) > 0 {
		t.Fatalf("processes still use %s: %v", spec.Dir, pids)
	}
	for _, f := range inst.Files {
		if _, err := os.Lstat(f); err == nil {
			t.Fatalf("%s left behind", f)
		}
	}
}

func TestArgs(t *testing.T) {
	spec := vmm.Spec{
		ID: "a1", Kernel: vmm.Kernel{Path: "/k/vmlinuz", Cmdline: "banger.x=1"}, Initrd: "/k/initrd",
		Disks: []vmm.Disk{{ID: "root", Path: "/v/root,1.ext4"}, {ID: "config", Path: "/v/config.img", ReadOnly: true}},
		Net:   &vmm.Net{Tap: "tap-a1", MAC: "52:54:00:12:34:56"},
		CPUs:  2, MemoryMiB: 512,
		Agent: vmm.Agent{Transport: model.TransportVirtioSerial, PortName: "banger.agent", VsockCID: 7},
	}
	p := Paths{QMP: "/v/qmp.sock", Agent: "/v/agent.sock", ConsoleLog: "/v/console.log"}
	line := strings.Join(Args(spec, p, "tcg"), " ")
	for _, want := range []string{
		"-M microvm,accel=tcg,acpi=on -cpu max -smp 2 -m 512 -nodefaults -no-user-config -nographic",
		"-chardev file,id=con,path=/v/console.log,append=on -serial chardev:con",
		"-kernel /k/vmlinuz -append console=ttyS0 reboot=t panic=-1 quiet pci=off banger.x=1 -initrd /k/initrd",
		"-drive id=root,file=/v/root,,1.ext4,format=raw,if=none -device virtio-blk-device,drive=root " +
			"-drive id=config,file=/v/config.img,format=raw,if=none,readonly=on -device virtio-blk-device,drive=config",
		"-netdev tap,id=net0,ifname=tap-a1,script=no,downscript=no -device virtio-net-device,netdev=net0,mac=52:54:00:12:34:56",
		"-device virtio-serial-device -chardev socket,id=agent,path=/v/agent.sock,server=on,wait=off -device virtserialport,chardev=agent,name=banger.agent",
		"-qmp unix:/v/qmp.sock,server=on,wait=off -no-reboot",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("command line lacks %q:\n%s", want, line)
		}
	}
	if strings.Contains(line, "vhost-vsock") || strings.Contains(line, "daemonize") {
		t.Errorf("unexpected option in %s", line)
	}
	if files := ExtraFiles(spec); files != nil {
		t.Errorf("ExtraFiles without an open tap = %v, want none", files)
	}

	// An open tap goes by descriptor: no ifname, so no /dev/net/tun open.
	tapFile, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer tapFile.Close()
	withFD := spec
	withFD.Net = &vmm.Net{Tap: "tap-a1", MAC: "52:54:00:12:34:56", File: tapFile}
	fdLine := strings.Join(Args(withFD, p, "tcg"), " ")
	if want := "-netdev tap,id=net0,fd=3 -device virtio-net-device,netdev=net0,mac=52:54:00:12:34:56"; !strings.Contains(fdLine, want) {
		t.Errorf("command line lacks %q:\n%s", want, fdLine)
	}
	if strings.Contains(fdLine, "ifname=") {
		t.Errorf("command line with an open tap still names it: %s", fdLine)
	}
	if files := ExtraFiles(withFD); len(files) != 1 || files[0] != tapFile {
		t.Errorf("ExtraFiles = %v, want the tap file as descriptor 3", files)
	}

	kvm := strings.Join(Args(spec, p, "kvm"), " ")
	if !strings.Contains(kvm, "accel=kvm") || !strings.Contains(kvm, "-cpu host") ||
		strings.Contains(kvm, "vhost-vsock") || !strings.Contains(kvm, "virtserialport") {
		t.Errorf("kvm command line wrong: %s", kvm)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := vmm.Spec{ID: "v1", Dir: dir, Kernel: vmm.Kernel{Path: file}, Initrd: file,
		Disks: []vmm.Disk{{ID: "root", Path: file}}, Net: &vmm.Net{Tap: "tap0", MAC: "52:54:00:00:00:01"},
		CPUs: 1, MemoryMiB: 128, Agent: vmm.Agent{Transport: model.TransportVirtioSerial, PortName: "banger.agent"}}
	d := New(Config{})
	if err := d.Validate(good); err != nil {
		t.Fatalf("good spec rejected: %v", err)
	}
	cases := map[string]func(s *vmm.Spec){
		"bad id":          func(s *vmm.Spec) { s.ID = "a b" },
		"no dir":          func(s *vmm.Spec) { s.Dir = filepath.Join(dir, "nope") },
		"long dir":        func(s *vmm.Spec) { s.Dir = "/" + strings.Repeat("d", 120) },
		"no kernel":       func(s *vmm.Spec) { s.Kernel.Path = filepath.Join(dir, "nope") },
		"kernel is dir":   func(s *vmm.Spec) { s.Kernel.Path = dir },
		"missing initrd":  func(s *vmm.Spec) { s.Initrd = filepath.Join(dir, "nope") },
		"dup disk":        func(s *vmm.Spec) { s.Disks = append(s.Disks, vmm.Disk{ID: "root", Path: file}) },
		"disk id comma":   func(s *vmm.Spec) { s.Disks[0].ID = "a,b" },
		"missing disk":    func(s *vmm.Spec) { s.Disks[0].Path = filepath.Join(dir, "nope") },
		"tap injection":   func(s *vmm.Spec) { s.Net = &vmm.Net{Tap: "t,script=/x", MAC: "52:54:00:00:00:01"} },
		"bad mac":         func(s *vmm.Spec) { s.Net = &vmm.Net{Tap: "tap0", MAC: "52:54:00:00:00:01,x=y"} },
		"zero cpus":       func(s *vmm.Spec) { s.CPUs = 0 },
		"tiny memory":     func(s *vmm.Spec) { s.MemoryMiB = 8 },
		"vsock":           func(s *vmm.Spec) { s.Agent = vmm.Agent{Transport: model.TransportVsock, VsockCID: 3} },
		"port name comma": func(s *vmm.Spec) { s.Agent.PortName = "a,b" },
		"no transport":    func(s *vmm.Spec) { s.Agent.Transport = "" },
		"share tag comma": func(s *vmm.Spec) { s.Shares = []vmm.Share{{Tag: "a,b", Source: dir}} },
		"share tag long":  func(s *vmm.Spec) { s.Shares = []vmm.Share{{Tag: strings.Repeat("a", 37), Source: dir}} },
		"share dup tag":   func(s *vmm.Spec) { s.Shares = []vmm.Share{{Tag: "a", Source: dir}, {Tag: "a", Source: dir}} },
		"share relative":  func(s *vmm.Spec) { s.Shares = []vmm.Share{{Tag: "a", Source: "rel/dir"}} },
		"share unclean":   func(s *vmm.Spec) { s.Shares = []vmm.Share{{Tag: "a", Source: dir + "/../x"}} },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			s := good
			s.Disks = append([]vmm.Disk(nil), good.Disks...)
			mutate(&s)
			if err := d.Validate(s); !errors.Is(err, vmm.ErrInvalidSpec) {
				t.Fatalf("want ErrInvalidSpec, got %v", err)
			}
		})
	}
}

func TestStepsAreNamedAndEditable(t *testing.T) {
	d := New(Config{})
	if got := strings.Join(d.Steps().Names(), ","); got != "validate,prepare-files,virtiofsd,spawn,wait-qmp,check-status" {
		t.Fatalf("steps %s", got)
	}
}

// TestBootAdoptStop boots the test guest with real QEMU and walks the
// lifecycle the daemon relies on.
func TestBootAdoptStop(t *testing.T) {
	testutil.RequireQEMU(t)
	kernel, _ := testutil.Kernel(t)
	spec := testSpec(t, kernel, testInitrd(t))
	d := newTestDriver(t)

	startCtx, cancelStart := context.WithTimeout(context.Background(), 90*time.Second)
	inst, err := d.Start(startCtx, spec)
	if err != nil {
		cancelStart()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Kill(context.Background(), inst) })
	// The start-up context is not the VM's lifetime.
	cancelStart()

	if inst.PID <= 0 || inst.PIDStartTime == 0 || inst.Accel != "tcg" || inst.Driver != "qemu" {
		t.Fatalf("instance %+v", inst)
	}
	if inst.Agent.Kind != vmm.AgentVirtioSerialYamux || inst.Agent.SocketPath != filepath.Join(spec.Dir, "agent.sock") {
		t.Fatalf("agent endpoint %+v", inst.Agent)
	}
	if sid, err := unix.Getsid(inst.PID); err != nil || sid != inst.PID {
		t.Fatalf("qemu is not a session leader: sid %d, err %v", sid, err)
	}
	waitConsole(t, d, inst, readyLine)
	if ok, reason := d.Alive(inst); !ok {
		t.Fatalf("vm died after start-up ctx was cancelled: %s", reason)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := d.status(ctx, inst.ControlSocket)
	if err != nil || !st.Running || st.Status != "running" {
		t.Fatalf("query-status: %+v, %v", st, err)
	}
	if _, err := os.Stat(inst.Agent.SocketPath); err != nil {
		t.Fatalf("agent socket: %v", err)
	}

	// A restarted daemon has a fresh driver and only the persisted Instance.
	fresh := newTestDriver(t)
	if err := fresh.Adopt(ctx, inst); err != nil {
		t.Fatalf("adopt: %v", err)
	}
	reused := inst
	reused.PIDStartTime++
	if err := fresh.Adopt(ctx, reused); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("adopt with a wrong start time: want ErrNotRunning, got %v", err)
	}

	// The tiny init has no ACPI button handling: powerdown is not honoured,
	// so Stop must fall back to quit and still end cleanly.
	begin := time.Now()
	if err := fresh.Stop(ctx, inst, true, 3*time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	t.Logf("graceful stop took %s", time.Since(begin))
	assertGone(t, d, inst, spec)
	if err := fresh.Adopt(ctx, inst); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("adopt after stop: want ErrNotRunning, got %v", err)
	}
	if _, err := os.Stat(inst.ConsoleLog); err != nil {
		t.Fatalf("console log should survive the vm: %v", err)
	}
}

func TestKill(t *testing.T) {
	testutil.RequireQEMU(t)
	kernel, _ := testutil.Kernel(t)
	spec := testSpec(t, kernel, testInitrd(t))
	d := newTestDriver(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	inst, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Kill(ctx, inst); err != nil {
		t.Fatal(err)
	}
	assertGone(t, d, inst, spec)
	// Killing a gone VM is not an error.
	if err := d.Kill(ctx, inst); err != nil {
		t.Fatalf("second kill: %v", err)
	}
}

// TestStartFailsEarly: QEMU exits during start-up (it cannot load the
// kernel); Start names the step, shows QEMU's output and leaves nothing.
func TestStartFailsEarly(t *testing.T) {
	testutil.RequireQEMU(t)
	spec := testSpec(t, "", "")
	bad := filepath.Join(t.TempDir(), "not-a-kernel")
	if err := os.WriteFile(bad, []byte("this is not a kernel"), 0o600); err != nil {
		t.Fatal(err)
	}
	spec.Kernel.Path = bad
	before, _ := os.ReadDir(spec.Dir)
	d := newTestDriver(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	_, err := d.Start(ctx, spec)
	if err == nil {
		t.Fatal("start with a bogus kernel succeeded")
	}
	var se *vmm.StepError
	if !errors.As(err, &se) || (se.Step != StepWaitQMP && se.Step != StepCheckStatus) {
		t.Fatalf("error does not name the failing step: %v", err)
	}
	if !strings.Contains(err.Error(), "qemu exited during start-up") || !strings.Contains(strings.ToLower(err.Error()), "kernel") {
		t.Fatalf("error lacks qemu's own words: %v", err)
	}
	t.Logf("error: %v", err)
	if pids := processesUsing(t, spec.Dir); len(pids) > 0 {
		t.Fatalf("processes left: %v", pids)
	}
	after, _ := os.ReadDir(spec.Dir)
	if len(after) != len(before) {
		t.Fatalf("files left behind: before %v, after %v", before, after)
	}

	// Validation failures never start anything either.
	spec.Initrd = filepath.Join(spec.Dir, "missing-initrd")
	_, err = d.Start(ctx, spec)
	if !errors.As(err, &se) || se.Step != StepValidate || !errors.Is(err, vmm.ErrInvalidSpec) {
		t.Fatalf("missing initrd: %v", err)
	}
}

func TestConsoleTrimWhileRunning(t *testing.T) {
	testutil.RequireQEMU(t)
	kernel, _ := testutil.Kernel(t)
	spec := testSpec(t, kernel, testInitrd(t))
	d := newTestDriver(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	inst, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Kill(context.Background(), inst)
	waitConsole(t, d, inst, readyLine)
	st, err := os.Stat(inst.ConsoleLog)
	if err != nil {
		t.Fatal(err)
	}
	trimmed, err := vmm.TrimConsole(inst.ConsoleLog, 32)
	if err != nil || !trimmed {
		t.Fatalf("trim a %d-byte console to 32: %v %v", st.Size(), trimmed, err)
	}
	if st2, _ := os.Stat(inst.ConsoleLog); st2.Size() > 32 {
		t.Fatalf("console still %d bytes", st2.Size())
	}
	// QEMU appends (append=on): its next output lands after the kept tail,
	// not at its old offset leaving a hole.
	if err := d.Stop(ctx, inst, false, 0); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(inst.ConsoleLog)
	if bytes.Contains(b, []byte{0}) {
		t.Fatalf("console has a hole after trim: %q", b)
	}
}

// TestSaveRestore saves a running VM and one paused first (as banger's
// suspend does); both must come back running.
func TestSaveRestore(t *testing.T) {
	testutil.RequireQEMU(t)
	kernel, _ := testutil.Kernel(t)
	initrd := testInitrd(t)
	for _, c := range []struct{ paused, restorePaused bool }{{false, false}, {true, false}, {true, true}} {
		t.Run(fmt.Sprintf("paused=%v/restore-paused=%v", c.paused, c.restorePaused), func(t *testing.T) {
			testSaveRestore(t, kernel, initrd, c.paused, c.restorePaused)
		})
	}
}

func testSaveRestore(t *testing.T, kernel, initrd string, paused, restorePaused bool) {
	spec := testSpec(t, kernel, initrd)
	d := newTestDriver(t)
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()
	inst, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Kill(context.Background(), inst)
	waitConsole(t, d, inst, readyLine)

	if paused {
		if err := d.Pause(ctx, inst); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(spec.Dir, "state.bin")
	if err := d.Save(ctx, inst, state); err != nil {
		t.Fatalf("save: %v", err)
	}
	if st, err := os.Stat(state); err != nil || st.Size() < 1<<20 {
		t.Fatalf("state file: %v %v", st, err)
	}
	if s, err := d.status(ctx, inst.ControlSocket); err != nil || s.Running {
		t.Fatalf("after save the vm should be paused: %+v %v", s, err)
	}
	if err := d.Kill(ctx, inst); err != nil {
		t.Fatal(err)
	}

	restore := d.Restore
	if restorePaused {
		restore = d.RestorePaused
	}
	restored, err := restore(ctx, spec, state)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	defer d.Kill(context.Background(), restored)
	if restorePaused {
		// Nothing runs until the caller says so.
		if s, err := d.status(ctx, restored.ControlSocket); err != nil || s.Running || s.Status != "paused" {
			t.Fatalf("vm restored paused: %+v %v", s, err)
		}
		if err := d.Resume(ctx, restored); err != nil {
			t.Fatal(err)
		}
	}
	if restored.PID == inst.PID {
		t.Fatal("restore reused the old process")
	}
	if s, err := d.status(ctx, restored.ControlSocket); err != nil || !s.Running {
		t.Fatalf("restored vm: %+v %v", s, err)
	}
	// The restored guest is the same init, still waiting for its signal.
	if err := d.Stop(ctx, restored, false, 0); err != nil {
		t.Fatal(err)
	}
	assertGone(t, d, restored, spec)
}

func TestParseTSCkHz(t *testing.T) {
	info := "processor\t: 0\ncpu MHz\t\t: 2596.120\nflags\t\t: fpu tsc constant_tsc nonstop_tsc\n\nprocessor\t: 1\ncpu MHz\t\t: 1000.0\n"
	if got := parseTSCkHz(info); got != 2596120 {
		t.Fatalf("got %d", got)
	}
	if got := parseTSCkHz(strings.ReplaceAll(info, "constant_tsc", "")); got != 0 {
		t.Fatalf("variable tsc trusted: %d", got)
	}
	spec := vmm.Spec{ID: "a", Kernel: vmm.Kernel{Path: "/k"}, CPUs: 1, MemoryMiB: 64,
		Agent: vmm.Agent{Transport: model.TransportVirtioSerial, PortName: "p"}}
	spec.Dir = t.TempDir()
	d := New(Config{Accel: "tcg", HostTSCkHz: func() int { return 1234 }})
	b := &Boot{Spec: spec}
	var undo vmm.Undo
	defer undo.Run(context.Background())
	if err := d.stepPrepare(context.Background(), b, &undo); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(b.Args, " "), "pci=off tsc_early_khz=1234 -") {
		t.Fatalf("tcg boot lacks tsc_early_khz: %v", b.Args)
	}
}

// TestArgsWithShares: each share is a vhost-user-fs device on its
// virtiofsd socket, with shared memfd guest memory and modern virtio-mmio
// (virtiofsd refuses legacy); a VM without shares keeps neither.
func TestArgsWithShares(t *testing.T) {
	spec := vmm.Spec{ID: "a1", Kernel: vmm.Kernel{Path: "/k/vmlinuz"}, CPUs: 1, MemoryMiB: 768,
		Agent:  vmm.Agent{Transport: model.TransportVirtioSerial, PortName: "banger.agent"},
		Shares: []vmm.Share{{Tag: "banger0", Source: "/home/u/proj"}, {Tag: "banger1", Source: "/srv/data", ReadOnly: true}}}
	p := Paths{QMP: "/v/qmp.sock", Agent: "/v/agent.sock", ConsoleLog: "/v/console.log", Dir: "/v,x"}
	line := strings.Join(Args(spec, p, "tcg"), " ")
	for _, want := range []string{
		"-M microvm,accel=tcg,acpi=on,memory-backend=mem ",
		"-global virtio-mmio.force-legacy=false -object memory-backend-memfd,id=mem,size=768M,share=on",
		"-chardev socket,id=fs0,path=/v,,x/fs-banger0.sock -device vhost-user-fs-device,chardev=fs0,tag=banger0",
		"-chardev socket,id=fs1,path=/v,,x/fs-banger1.sock -device vhost-user-fs-device,chardev=fs1,tag=banger1",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("command line lacks %q:\n%s", want, line)
		}
	}
	spec.Shares = nil
	plain := strings.Join(Args(spec, p, "tcg"), " ")
	for _, not := range []string{"memory-backend", "force-legacy", "vhost-user-fs"} {
		if strings.Contains(plain, not) {
			t.Errorf("a vm without shares has %q: %s", not, plain)
		}
	}
}

// TestArgsWithMemoryFile: file-backed RAM is named as microvm's default
// RAM block (so a state saved from either kind loads into the other),
// shared for a snapshot's RAM being made, copy-on-write for a clone; it
// cannot be combined with shares.
func TestArgsWithMemoryFile(t *testing.T) {
	spec := vmm.Spec{ID: "a1", Kernel: vmm.Kernel{Path: "/k/vmlinuz"}, CPUs: 1, MemoryMiB: 512,
		Agent:  vmm.Agent{Transport: model.TransportVirtioSerial, PortName: "banger.agent"},
		Memory: &vmm.MemoryFile{Path: "/s/a,b/ram"}}
	p := Paths{QMP: "/v/qmp.sock", Agent: "/v/agent.sock", ConsoleLog: "/v/console.log", Dir: "/v"}
	line := strings.Join(Args(spec, p, "tcg"), " ")
	for _, want := range []string{
		"-M microvm,accel=tcg,acpi=on,memory-backend=microvm.ram ",
		"-object memory-backend-file,id=microvm.ram,size=512M,mem-path=/s/a,,b/ram,share=off",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("command line lacks %q:\n%s", want, line)
		}
	}
	spec.Memory.Shared = true
	if line := strings.Join(Args(spec, p, "tcg"), " "); !strings.Contains(line, ",share=on") {
		t.Errorf("shared memory file not shared: %s", line)
	}
	d := newTestDriver(t)
	s := testSpec(t, "/bin/true", "")
	s.Kernel.Path = s.Disks[0].Path
	s.Memory = &vmm.MemoryFile{Path: filepath.Join(s.Dir, "missing")}
	if err := d.Validate(s); err == nil || !strings.Contains(err.Error(), "memory file") {
		t.Errorf("a missing copy-on-write memory file: %v", err)
	}
	s.Memory = &vmm.MemoryFile{Path: filepath.Join(s.Dir, "ram"), Shared: true}
	s.Shares = []vmm.Share{{Tag: "t", Source: "/srv"}}
	if err := d.Validate(s); err == nil || !strings.Contains(err.Error(), "cannot be combined") {
		t.Errorf("memory file with shares: %v", err)
	}
}
