package doctor

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/buildinfo"
	"github.com/bangerdev/banger/internal/jailer"
	"github.com/bangerdev/banger/internal/kvmprobe"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/testutil"
)

// host is a fake machine: a PATH dir and an sbin dir holding shell-script
// tools that really run, an os-release file, and a BANGER_HOME.
type host struct {
	t         *testing.T
	bin, sbin string
	cfg       Config
}

func newHost(t *testing.T, osRelease string) *host {
	t.Helper()
	home := t.TempDir()
	p := testutil.UserPaths(t, home)
	osr := filepath.Join(t.TempDir(), "os-release")
	if err := os.WriteFile(osr, []byte(osRelease), 0o644); err != nil {
		t.Fatal(err)
	}
	h := &host{t: t, bin: t.TempDir(), sbin: t.TempDir()}
	h.cfg = Config{
		Paths:     p,
		OSRelease: osr,
		LookPath:  PathLookup(h.bin),
		SbinDirs:  []string{h.sbin},
		Statfs:    func(string) (uint64, error) { return 100 << 30, nil },
		KVM: func() kvmprobe.Result {
			return kvmprobe.Result{Usable: true, Accel: kvmprobe.AccelKVM, Reason: "hardware KVM (kvm_intel)"}
		},
		Geteuid:     func() int { return 1000 },
		CallTimeout: 2 * time.Second,
		Virtiofsd:   filepath.Join(h.bin, "virtiofsd"),
		Sysctl:      func(string) (string, error) { return "", os.ErrNotExist },
	}
	return h
}

const debian = "ID=debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"

// tool writes an executable script named name into dir.
func (h *host) tool(dir, name, body string) {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		h.t.Fatal(err)
	}
}

func qemuScript(version string, microvm bool) string {
	machines := `printf 'Supported machines are:\npc                   Standard PC (i440FX + PIIX, 1996)\n'`
	if microvm {
		machines = `printf 'Supported machines are:\nmicrovm              microvm (i386)\npc                   Standard PC (i440FX + PIIX, 1996)\n'`
	}
	return fmt.Sprintf(`case "$1" in
--version) echo "QEMU emulator version %s (Debian 1:%s)"; echo "Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers";;
-machine) %s;;
*) exit 2;;
esac`, version, version, machines)
}

func firecrackerScript(version string) string {
	return fmt.Sprintf(`[ "$1" = --version ] && echo "Firecracker %s" && echo && echo "Supported snapshot data format versions: v1.0.0"`, version)
}

// goodTools installs everything a healthy host has on PATH.
func (h *host) goodTools() {
	h.tool(h.bin, QEMUBinary, qemuScript("8.2.2", true))
	for _, n := range append(append([]string{}, e2fsprogsTools...), "debootstrap", "ip", "nft") {
		h.tool(h.bin, n, "exit 0")
	}
}

func (h *host) run() Report {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return Run(ctx, h.cfg)
}

func mustFind(t *testing.T, r Report, name string) Check {
	t.Helper()
	c, ok := r.Find(name)
	if !ok {
		t.Fatalf("no %q check in %+v", name, r.Checks)
	}
	return c
}

func expect(t *testing.T, c Check, status Status, detail, fix string) {
	t.Helper()
	if c.Status != status || !strings.Contains(c.Detail, detail) || !strings.Contains(c.Fix, fix) {
		t.Fatalf("%s = %s %q (fix %q); want %s with detail ~%q, fix ~%q", c.Name, c.Status, c.Detail, c.Fix, status, detail, fix)
	}
}

func TestEveryCheckRunsInOrder(t *testing.T) {
	h := newHost(t, debian)
	h.goodTools()
	r := h.run()
	want := []string{CheckKVM, CheckQEMU, CheckFirecracker, CheckJailer, CheckE2fsprogs, CheckDebootstrap, CheckNetTools,
		CheckDisk, CheckStore, CheckDaemon, CheckHelper, CheckHostNetwork, CheckKernels, CheckImages, CheckVMMCgroups, CheckVirtiofs}
	if len(r.Checks) != len(want) {
		t.Fatalf("got %d checks, want %d: %+v", len(r.Checks), len(want), r.Checks)
	}
	for i, c := range r.Checks {
		if c.Name != want[i] {
			t.Errorf("check %d is %q, want %q", i, c.Name, want[i])
		}
		if c.Status != OK && c.Status != Warn && c.Status != Fail {
			t.Errorf("%s has status %q", c.Name, c.Status)
		}
	}
	// Non-root without a helper: the only failure on an otherwise good host.
	if r.OK || r.Count(Fail) != 1 || mustFind(t, r, CheckHelper).Status != Fail {
		t.Fatalf("want exactly the root helper failing, got %+v", r.Checks)
	}
}

func TestMissingQEMUFailsWithDistroHint(t *testing.T) {
	for _, tc := range []struct{ osRelease, hint string }{
		{debian, "sudo apt-get install qemu-system-x86"},
		{"ID=fedora\n", "sudo dnf install qemu-system-x86-core"},
		{"ID=arch\n", "sudo pacman -S qemu-base"},
	} {
		h := newHost(t, tc.osRelease)
		r := h.run()
		expect(t, mustFind(t, r, CheckQEMU), Fail, "qemu-system-x86_64 is not installed", tc.hint)
		if r.OK {
			t.Fatal("report OK with qemu missing")
		}
	}
}

func TestQEMUVersionAndMachine(t *testing.T) {
	cases := []struct {
		name, script string
		status       Status
		detail       string
	}{
		{"current", qemuScript("7.2.22", true), OK, "QEMU 7.2.22, microvm machine available"},
		{"two-part version", qemuScript("9.0", true), OK, "QEMU 9.0.0"},
		{"too old", qemuScript("4.2.1", true), Fail, "QEMU 4.2.1; banger needs 5.2.0 or newer"},
		{"no microvm", qemuScript("8.0.0", false), Fail, "has no microvm machine type"},
		{"not qemu", `echo "something else"`, Warn, "no QEMU version"},
		{"broken", `echo "qemu: error while loading shared libraries" >&2; exit 127`, Fail, "--version failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, debian)
			h.tool(h.bin, QEMUBinary, tc.script)
			c := mustFind(t, h.run(), CheckQEMU)
			expect(t, c, tc.status, tc.detail, "")
			if tc.status != OK && !strings.Contains(c.Fix, "qemu-system-x86") {
				t.Fatalf("fix %q names no package", c.Fix)
			}
		})
	}
}

func TestQEMUOnlyInSbinWarns(t *testing.T) {
	h := newHost(t, debian)
	h.tool(h.sbin, QEMUBinary, qemuScript("8.2.2", true))
	c := mustFind(t, h.run(), CheckQEMU)
	expect(t, c, Warn, "is not on PATH", "add "+h.sbin+" to PATH")
}

// The PVM verdict comes from a real probe of a fake /sys and /dev/kvm.
func TestPVMHostWarnsAndUsesTCG(t *testing.T) {
	root := t.TempDir()
	devKVM := filepath.Join(root, "kvm")
	if err := os.WriteFile(devKVM, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"kvm", "kvm_pvm"} {
		if err := os.MkdirAll(filepath.Join(root, "sys", "module", m), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	prober := kvmprobe.Prober{DevKVM: devKVM, SysRoot: filepath.Join(root, "sys"), ProcRoot: filepath.Join(root, "proc")}
	h := newHost(t, debian)
	h.cfg.KVM = prober.Probe
	r := h.run()
	expect(t, mustFind(t, r, CheckKVM), Warn,
		"KVM is PVM (paravirtual nested): a standard kernel cannot run under it; VMs use TCG software emulation (slow but works)", "kvm_intel or kvm_amd")

	prober.DevKVM = filepath.Join(root, "absent")
	h.cfg.KVM = prober.Probe
	expect(t, mustFind(t, h.run(), CheckKVM), Warn, "is absent", "")

	h.cfg.KVM = func() kvmprobe.Result {
		return kvmprobe.Result{Usable: true, Accel: kvmprobe.AccelKVM, Reason: "hardware KVM (kvm_amd)"}
	}
	expect(t, mustFind(t, h.run(), CheckKVM), OK, "hardware KVM (kvm_amd)", "")
}

func TestFirecrackerVersionRange(t *testing.T) {
	cases := []struct {
		name, version string
		jailer        bool
		kvm           bool
		status        Status
		detail        string
	}{
		{"supported", "v1.7.0", true, true, OK, "Firecracker v1.7.0 (supported: v1.4.0 up to (not including) v2.0.0)"},
		{"too old", "v1.3.9", true, true, Fail, "is Firecracker v1.3.9; banger supports v1.4.0"},
		{"too new", "v2.0.0", true, true, Fail, "is Firecracker v2.0.0"},
		{"no jailer", "v1.7.0", false, true, Warn, "jailer is missing"},
		{"no kvm", "v1.7.0", true, false, Warn, "unusable here without KVM"},
		{"garbage", "???", true, true, Fail, "no version in"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, debian)
			h.goodTools()
			h.tool(h.bin, "firecracker", firecrackerScript(tc.version))
			if tc.jailer {
				h.tool(h.bin, "jailer", "exit 0")
			}
			if !tc.kvm {
				h.cfg.KVM = func() kvmprobe.Result { return kvmprobe.Result{Accel: kvmprobe.AccelTCG, Reason: "/dev/kvm is absent"} }
			}
			r := h.run()
			expect(t, mustFind(t, r, CheckFirecracker), tc.status, tc.detail, "")
			if tc.status == Fail && r.OK {
				t.Fatal("report OK with an unsupported firecracker")
			}
		})
	}
}

func TestFirecrackerAbsentWarns(t *testing.T) {
	h := newHost(t, debian)
	h.goodTools()
	r := h.run()
	expect(t, mustFind(t, r, CheckFirecracker), Warn, "not installed: VMs run under QEMU", "firecracker-microvm/firecracker/releases")
	h.cfg.KVM = func() kvmprobe.Result { return kvmprobe.Result{Accel: kvmprobe.AccelTCG, Reason: "no KVM"} }
	expect(t, mustFind(t, h.run(), CheckFirecracker), Warn, "needs usable KVM", "")
}

func TestTools(t *testing.T) {
	h := newHost(t, "ID=fedora\n")
	h.tool(h.bin, "mkfs.ext4", "exit 0")
	h.tool(h.bin, "e2fsck", "exit 0")
	r := h.run()
	expect(t, mustFind(t, r, CheckE2fsprogs), Fail, "missing debugfs, resize2fs", "sudo dnf install e2fsprogs")
	expect(t, mustFind(t, r, CheckDebootstrap), Warn, "needed only to build", "sudo dnf install debootstrap")
	nt := mustFind(t, r, CheckNetTools)
	expect(t, nt, OK, "ip: not installed (optional", "")
	if !strings.Contains(nt.Detail, "sudo dnf install nftables") {
		t.Fatalf("net tools detail %q lacks the nftables hint", nt.Detail)
	}

	// Installed in sbin but not on PATH: a daemon started from here misses them.
	h = newHost(t, debian)
	for _, n := range append(append([]string{}, e2fsprogsTools...), "debootstrap") {
		h.tool(h.sbin, n, "exit 0")
	}
	r = h.run()
	expect(t, mustFind(t, r, CheckE2fsprogs), Warn, "installed but not on PATH", "add "+h.sbin+" to PATH")
	expect(t, mustFind(t, r, CheckDebootstrap), Warn, "is not on PATH", "add "+h.sbin+" to PATH")

	h = newHost(t, debian)
	h.goodTools()
	r = h.run()
	expect(t, mustFind(t, r, CheckE2fsprogs), OK, filepath.Join(h.bin, "resize2fs"), "")
	expect(t, mustFind(t, r, CheckNetTools), OK, "nft: "+filepath.Join(h.bin, "nft"), "")
}

func TestDiskSpace(t *testing.T) {
	h := newHost(t, debian)
	var asked string
	for _, tc := range []struct {
		free   uint64
		err    error
		status Status
		detail string
	}{
		{500 << 20, nil, Fail, "500 MiB free"},
		{3 << 30, nil, Warn, "3.0 GiB free"},
		{50 << 30, nil, OK, "50.0 GiB free"},
		{0, fmt.Errorf("input/output error"), Warn, "cannot measure free space"},
	} {
		h.cfg.Statfs = func(p string) (uint64, error) { asked = p; return tc.free, tc.err }
		c := mustFind(t, h.run(), CheckDisk)
		expect(t, c, tc.status, tc.detail, "")
		if tc.status == Fail || tc.status == Warn && tc.err == nil {
			if !strings.Contains(c.Fix, "BANGER_HOME") {
				t.Fatalf("disk fix %q", c.Fix)
			}
		}
	}
	// The state dir does not exist yet: its nearest existing parent is measured.
	if want := filepath.Dir(h.cfg.Paths.State); asked != want {
		t.Fatalf("statfs on %q, want %q", asked, want)
	}
}

func TestStoreFromTheFutureFails(t *testing.T) {
	h := newHost(t, debian)
	if err := os.MkdirAll(h.cfg.Paths.State, 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", h.cfg.Paths.StoreFile())
	if err != nil {
		t.Fatal(err)
	}
	future := store.LatestVersion() + 3
	if _, err := db.Exec(fmt.Sprintf("CREATE TABLE x(y); PRAGMA user_version = %d", future)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	r := h.run()
	expect(t, mustFind(t, r, CheckStore), Fail, fmt.Sprintf("schema %d, this banger knows up to %d", future, store.LatestVersion()), "a newer banger wrote this store")
	if r.OK {
		t.Fatal("report OK with a store from the future")
	}
}

func TestStoreStates(t *testing.T) {
	h := newHost(t, debian)
	expect(t, mustFind(t, h.run(), CheckStore), OK, "no store yet", "")
	if err := os.MkdirAll(h.cfg.Paths.State, 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(context.Background(), h.cfg.Paths.StoreFile(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	expect(t, mustFind(t, h.run(), CheckStore), OK, fmt.Sprintf("at schema %d (current)", store.LatestVersion()), "")

	if err := os.WriteFile(h.cfg.Paths.StoreFile(), []byte("this is not a database, just some text that is long enough to be read as one......"), 0o600); err != nil {
		t.Fatal(err)
	}
	expect(t, mustFind(t, h.run(), CheckStore), Fail, "store is damaged", "move it aside to start empty")
}

// TestDamagedStoreNamesTheBackup: with a pre-migration backup beside a
// damaged store, doctor's fix is the exact restore of that backup.
func TestDamagedStoreNamesTheBackup(t *testing.T) {
	h := newHost(t, debian)
	if err := os.MkdirAll(h.cfg.Paths.State, 0o700); err != nil {
		t.Fatal(err)
	}
	path := h.cfg.Paths.StoreFile()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	// A store at schema 1 (an old banger's): opening it backs it up first.
	if _, err := db.Exec(`CREATE TABLE images (name TEXT); PRAGMA user_version = 1`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := store.Open(context.Background(), path, nil)
	if err == nil {
		s.Close()
	}
	bs, _ := store.Backups(path)
	if len(bs) != 1 {
		t.Fatalf("backups after opening an old store: %+v (open: %v)", bs, err)
	}
	if err := os.WriteFile(path, []byte(strings.Repeat("damaged ", 600)), 0o600); err != nil {
		t.Fatal(err)
	}
	expect(t, mustFind(t, h.run(), CheckStore), Fail, "store is damaged", "cp "+bs[0].Path+" "+path)
}

func TestNoDaemonNoHelper(t *testing.T) {
	h := newHost(t, debian)
	r := h.run()
	expect(t, mustFind(t, r, CheckDaemon), Warn, "not running (socket "+h.cfg.Paths.Socket(), "banger daemon start")
	expect(t, mustFind(t, r, CheckHelper), Fail, "not running", "sudo banger system install")
	h.cfg.Geteuid = func() int { return 0 }
	expect(t, mustFind(t, h.run(), CheckHelper), Warn, "the daemon starts one when it runs as root", "banger daemon start")
	if _, err := os.Stat(h.cfg.Paths.Runtime); !os.IsNotExist(err) {
		t.Fatalf("doctor created %s (err %v): it must not start or prepare the daemon", h.cfg.Paths.Runtime, err)
	}
}

// answer serves d with what f returns.
func answer[Resp any](d api.Method[api.Empty, Resp], f func() Resp) func(*rpc.Methods) {
	return func(m *rpc.Methods) {
		rpc.Register(m, d, func(context.Context, *rpc.Call, api.Empty) (Resp, error) { return f(), nil })
	}
}

// serve runs a real rpc server with methods on socket until the test ends.
func serve(t *testing.T, socket string, methods ...func(*rpc.Methods)) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ms := rpc.NewMethods()
	for _, reg := range methods {
		reg(ms)
	}
	go func() { done <- rpc.NewServer(ms, rpc.ServerOptions{}).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve %s: %v", socket, err)
		}
	})
}

func TestHelperAnswersWithoutDaemon(t *testing.T) {
	h := newHost(t, debian)
	serve(t, h.cfg.Paths.HelperSocket(),
		answer(api.MethodHelperIdentity, func() api.HelperIdentity {
			return api.HelperIdentity{PID: 4242, Build: buildinfo.Info{Version: "v1.2.3"}}
		}),
	)
	expect(t, mustFind(t, h.run(), CheckHelper), OK, "pid 4242, v1.2.3", "")
}

func TestHostNetworkChangesReported(t *testing.T) {
	h := newHost(t, debian)
	st := api.NetworkState{}
	var mu sync.Mutex
	serve(t, h.cfg.Paths.HelperSocket(),
		answer(api.MethodHelperNetworkState, func() api.NetworkState {
			mu.Lock()
			defer mu.Unlock()
			return st
		}),
	)
	expect(t, mustFind(t, h.run(), CheckHostNetwork), OK, "banger has changed nothing", "")

	mu.Lock()
	st = api.NetworkState{
		Bridge:        &api.NetworkBridgeState{Name: "banger0", Up: true, IPv6Disabled: true},
		Taps:          []api.NetworkTapState{{Name: "bt-a", SourceRules: 7}},
		ForwardingWas: "0",
		Changes:       []string{"bridge banger0 created", "net.ipv4.ip_forward set to 1 (was 0)"},
	}
	mu.Unlock()
	expect(t, mustFind(t, h.run(), CheckHostNetwork), OK, "banger changed: bridge banger0 created; net.ipv4.ip_forward set to 1 (was 0)", "restores net.ipv4.ip_forward to 0")

	mu.Lock()
	st.Bridge.IPv6Disabled = false
	st.Taps[0].SourceRules = 0
	mu.Unlock()
	expect(t, mustFind(t, h.run(), CheckHostNetwork), Warn, "ipv6 is on on bridge banger0 (a guest could send router advertisements); tap bt-a has no source filter", "banger system network down")
}

func TestRunningDaemon(t *testing.T) {
	h := newHost(t, debian)
	h.goodTools()
	helper := api.HelperStatus{Socket: "/run/banger/root-helper.sock", Reachable: true, PID: 77, Version: buildinfo.Get().Version}
	version := buildinfo.Get().Version
	var mu sync.Mutex
	serve(t, h.cfg.Paths.Socket(),
		answer(api.MethodDaemonStatus, func() api.DaemonStatus {
			mu.Lock()
			defer mu.Unlock()
			return api.DaemonStatus{PID: 99, Build: buildinfo.Info{Version: version}, UptimeSeconds: 65, Helper: helper}
		}),
		answer(api.MethodKernelList, func() api.KernelList {
			return api.KernelList{Kernels: []model.Kernel{{Name: "debian-cloud", VMMs: []model.VMMKind{"qemu"}}}}
		}),
		answer(api.MethodImageList, func() api.ImageList {
			return api.ImageList{}
		}),
	)
	r := h.run()
	expect(t, mustFind(t, r, CheckDaemon), OK, "pid 99, "+version+", up 1m5s", "")
	expect(t, mustFind(t, r, CheckHelper), OK, "pid 77", "")
	expect(t, mustFind(t, r, CheckKernels), OK, "debian-cloud", "")
	expect(t, mustFind(t, r, CheckImages), Warn, "no image (per the daemon)", "banger image build debian-bookworm")
	if !r.OK {
		t.Fatalf("report not OK: %+v", r.Checks)
	}

	mu.Lock()
	helper = api.HelperStatus{Socket: "/run/banger/root-helper.sock", Error: "connection refused"}
	version = "v9.9.9"
	mu.Unlock()
	r = h.run()
	expect(t, mustFind(t, r, CheckDaemon), Warn, "v9.9.9", "banger daemon stop; banger daemon start")
	expect(t, mustFind(t, r, CheckHelper), Fail, "cannot reach it at /run/banger/root-helper.sock: connection refused", "sudo banger system install")
	if r.OK {
		t.Fatal("report OK with an unreachable helper")
	}
}

func TestDaemonThatDoesNotAnswerFails(t *testing.T) {
	h := newHost(t, debian)
	h.cfg.CallTimeout = 300 * time.Millisecond
	sock := h.cfg.Paths.Socket()
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	start := time.Now()
	r := h.run()
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("doctor took %s against a silent daemon", d)
	}
	expect(t, mustFind(t, r, CheckDaemon), Fail, "does not answer", h.cfg.Paths.DaemonLog())
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(v)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestArtifactsOnDiskWithoutDaemon(t *testing.T) {
	h := newHost(t, debian)
	h.goodTools()
	r := h.run()
	expect(t, mustFind(t, r, CheckKernels), Warn, "no kernel (per "+h.cfg.Paths.KernelsDir(), "banger kernel pull")
	expect(t, mustFind(t, r, CheckImages), Warn, "no image (per "+h.cfg.Paths.ImagesDir(), "banger image build debian-bookworm")

	kdir := h.cfg.Paths.KernelsDir()
	writeJSON(t, filepath.Join(kdir, "fc-only", "kernel.json"), map[string]any{"name": "fc-only", "vmms": []string{"firecracker"}})
	writeJSON(t, filepath.Join(kdir, ".staging-x-1", "kernel.json"), map[string]any{"name": ".staging-x-1"})
	writeJSON(t, filepath.Join(kdir, "liar", "kernel.json"), map[string]any{"name": "other"})
	writeJSON(t, filepath.Join(h.cfg.Paths.ImagesDir(), "debian-bookworm", "image.json"), map[string]any{"name": "debian-bookworm"})
	if err := os.MkdirAll(filepath.Join(h.cfg.Paths.ImagesDir(), "half-built"), 0o755); err != nil {
		t.Fatal(err)
	}
	r = h.run()
	expect(t, mustFind(t, r, CheckKernels), Warn, "fc-only: none boots under qemu", "banger kernel pull")
	if c := mustFind(t, r, CheckKernels); strings.Contains(c.Detail, "liar") || strings.Contains(c.Detail, "staging") {
		t.Fatalf("kernels detail lists non-kernels: %q", c.Detail)
	}
	expect(t, mustFind(t, r, CheckImages), OK, "debian-bookworm", "")
	if c := mustFind(t, r, CheckImages); c.Detail != "debian-bookworm" {
		t.Fatalf("images detail = %q", c.Detail)
	}

	writeJSON(t, filepath.Join(kdir, "debian-cloud", "kernel.json"), map[string]any{"name": "debian-cloud", "vmms": []string{"qemu", "firecracker"}})
	expect(t, mustFind(t, h.run(), CheckKernels), OK, "debian-cloud, fc-only", "")
}

func TestPathLookup(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	h := &host{t: t}
	h.tool(b, "x", "exit 0")
	if err := os.WriteFile(filepath.Join(a, "x"), []byte("not executable"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := PathLookup(a + string(os.PathListSeparator) + b)("x")
	if err != nil || got != filepath.Join(b, "x") {
		t.Fatalf("PathLookup = %q, %v; want %s", got, err, filepath.Join(b, "x"))
	}
	if _, err := PathLookup(a)("x"); err == nil {
		t.Fatal("found a non-executable file")
	}
}

// Root inspecting an owner's state reads none of its files: kernels on disk
// are not listed from the directory, and the store goes through CheckStore.
func TestOwnerStateReadsNoOwnerFiles(t *testing.T) {
	h := newHost(t, debian)
	writeJSON(t, filepath.Join(h.cfg.Paths.KernelsDir(), "debian-cloud", "kernel.json"), artifact{Name: "debian-cloud"})
	h.cfg.OwnerState = true
	var checked string
	h.cfg.CheckStore = func(ctx context.Context, path string) (store.CheckResult, error) {
		checked = path
		return store.CheckResult{Path: path, Current: 1, Target: 1, WouldSucceed: true}, nil
	}
	r := h.run()
	if checked != h.cfg.Paths.StoreFile() {
		t.Fatalf("store checked at %q, want through CheckStore at %q", checked, h.cfg.Paths.StoreFile())
	}
	expect(t, mustFind(t, r, CheckKernels), Warn, "does not read the owner's kernel files", "")
	expect(t, mustFind(t, r, CheckImages), Warn, "does not read the owner's image files", "")
}

// A running VM whose VMM still shares the daemon's cgroup is flagged; one
// in banger/vm-<id> (or its systemd scope) is not.
func TestVMMCgroups(t *testing.T) {
	h := newHost(t, debian)
	proc := t.TempDir()
	h.cfg.Proc = proc
	writeCg := func(pid int, body string) {
		d := filepath.Join(proc, strconv.Itoa(pid))
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "cgroup"), []byte(body), 0o644)
	}
	writeCg(11, "9:name=systemd:/banger/vm-aa\n0::/banger/vm-aa\n")
	writeCg(12, "0::/system.slice/bangerd.service\n")
	writeCg(13, "0::/banger.slice/banger-vm-cc.scope\n")
	vms := []model.VM{
		{ID: "aa", Name: "one", State: model.StateRunning, PID: 11},
		{ID: "cc", Name: "three", State: model.StateRunning, PID: 13},
	}
	var mu sync.Mutex
	serve(t, h.cfg.Paths.Socket(),
		answer(api.MethodDaemonStatus, func() api.DaemonStatus {
			return api.DaemonStatus{PID: 99, Build: buildinfo.Get()}
		}),
		answer(api.MethodVMList, func() api.VMList {
			mu.Lock()
			defer mu.Unlock()
			return api.VMList{VMs: vms}
		}),
	)
	expect(t, mustFind(t, h.run(), CheckVMMCgroups), OK, "2 running vm(s), each vmm in its own cgroup", "")
	mu.Lock()
	vms = append(vms, model.VM{ID: "bb", Name: "two", State: model.StateRunning, PID: 12})
	mu.Unlock()
	expect(t, mustFind(t, h.run(), CheckVMMCgroups), Warn, "two (pid 12)", "banger vm stop NAME; banger vm start NAME")
}

// TestJailerCheck: where Firecracker could run, each unmet need of the
// jailer is a warning naming its fix; all met is OK.
func TestJailerCheck(t *testing.T) {
	testutil.RequireRoot(t) // root-owned binaries
	setup := func(t *testing.T) *host {
		h := newHost(t, debian)
		h.goodTools()
		h.tool(h.bin, "firecracker", firecrackerScript("v1.7.0"))
		h.tool(h.bin, "jailer", "exit 0")
		dir := t.TempDir()
		write := func(name, body string) string {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}
		h.cfg.Firecracker = jailer.Config{FirecrackerBinary: filepath.Join(h.bin, "firecracker"), JailerBinary: filepath.Join(h.bin, "jailer"),
			UIDStart: 1900000000, UIDCount: 8, CgroupVersion: "2", ChrootBase: filepath.Join(dir, "jails")}
		h.cfg.KVMDevice = "/dev/null" // a character device standing in for /dev/kvm
		h.cfg.Mountinfo = write("mountinfo", "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
		h.cfg.Passwd = write("passwd", "root:x:0:0::/root:/bin/sh\n")
		h.cfg.Group = write("group", "root:x:0:\n")
		return h
	}
	h := setup(t)
	expect(t, mustFind(t, h.run(), CheckJailer), OK, "jails run as uids 1900000000-1900000007, cgroup v2", "")

	cases := map[string]struct {
		mutate      func(h *host)
		detail, fix string
	}{
		"jailer owned by a user": {func(h *host) { os.Chown(h.cfg.Firecracker.JailerBinary, 4242, 4242) }, "firecracker.jailer_binary", "root-owned"},
		"binary missing":         {func(h *host) { h.cfg.Firecracker.FirecrackerBinary = "/nonexistent/firecracker" }, "firecracker.binary", "install it"},
		"no kvm":                 {func(h *host) { h.cfg.KVMDevice = "/nonexistent/kvm" }, "/nonexistent/kvm is missing", "modprobe"},
		"cgroup v1 host": {func(h *host) {
			os.WriteFile(h.cfg.Mountinfo, []byte("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"), 0o644)
		}, "runs cgroup v1", `cgroup_version = "1"`},
		"uid of a user": {func(h *host) {
			os.WriteFile(h.cfg.Passwd, []byte("svc:x:1900000003:100::/:/bin/false\n"), 0o644)
		}, `user "svc"`, "uid_start"},
		"chroot base in a user's dir": {func(h *host) {
			d := filepath.Join(t.TempDir(), "user")
			os.Mkdir(d, 0o755)
			os.Chown(d, 4242, 4242)
			h.cfg.Firecracker.ChrootBase = filepath.Join(d, "jails")
		}, "firecracker.chroot_base", "only root"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := setup(t)
			tc.mutate(h)
			expect(t, mustFind(t, h.run(), CheckJailer), Warn, tc.detail, tc.fix)
		})
	}
	// Without usable KVM Firecracker is out anyway: nothing to check.
	h = setup(t)
	h.cfg.KVM = func() kvmprobe.Result { return kvmprobe.Result{Accel: kvmprobe.AccelTCG, Reason: "PVM"} }
	expect(t, mustFind(t, h.run(), CheckJailer), OK, "not needed", "")
}
