package firecracker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/jailer"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/roothelper"
	"github.com/bangerdev/banger/internal/testutil"
	"github.com/bangerdev/banger/internal/vmm"
)

// TestStartThroughRootHelper boots through the SDK's real HTTP client with
// the root helper's vm.jailer.* as launcher: the helper builds the jail and
// runs a fake jailer (roothelper/testdata/fakejailer) that chroots, drops
// to the jail's uid and answers Firecracker's API, recording each call.
// The driver never opens the jail: every API connection is one the helper
// passed. (Here the owner is root; roothelper's tests attack the method
// as an unprivileged owner.)
func TestStartThroughRootHelper(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("go toolchain not on PATH: %v", err)
	}
	bin, err := os.MkdirTemp("", "banger-fc-helper-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bin) })
	os.Chmod(bin, 0o755)
	fake := filepath.Join(bin, "jailer")
	build := exec.Command("go", "build", "-o", fake, "../../roothelper/testdata/fakejailer")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build fake jailer: %v\n%s", err, out)
	}
	fc := filepath.Join(bin, "firecracker")
	writeExec(t, fc, `echo "Firecracker v1.7.0"`)

	home := filepath.Join(bin, "home")
	t.Setenv(paths.EnvHome, home)
	layout, err := paths.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	id, err := model.NewVMID()
	if err != nil {
		t.Fatal(err)
	}
	vmDir := layout.VMDir(id)
	store := filepath.Join(bin, "store")
	for _, d := range []string{vmDir, store} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	kernel := filepath.Join(store, "vmlinux-6.1")
	fakeVMLinux(t, kernel)
	initrd := filepath.Join(store, "initramfs-abc.img")
	hostFile(t, store, "initramfs-abc.img", "initrd")
	hostFile(t, vmDir, "root.ext4", "root")
	hostFile(t, vmDir, "config.img", "config")

	cfg := jailer.Config{FirecrackerBinary: fc, JailerBinary: fake, UIDStart: 1900000000, UIDCount: 2, CgroupVersion: "2", ChrootBase: filepath.Join(bin, "jails")}
	sock := filepath.Join(bin, "helper.sock")
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- roothelper.Run(ctx, roothelper.Options{Socket: sock, OwnerUID: 0, Jailer: cfg,
			Logger: slog.New(slog.DiscardHandler), Ready: func() { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("helper: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("helper not ready")
	}
	t.Cleanup(func() { cancel(); <-done })
	helper := roothelper.NewClient(sock)
	t.Cleanup(func() { helper.StopJailer(context.Background(), id) })

	d := New(Config{Jailer: cfg, Launcher: NewHelperLauncher(helper), StartTimeout: 20 * time.Second,
		KVMDevice: "/dev/null",
		mountinfo: hostFile(t, bin, "mountinfo", "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"),
		passwd:    hostFile(t, bin, "passwd", "root:x:0:0::/root:/bin/sh\n"),
		group:     hostFile(t, bin, "group", "root:x:0:\n"),
	})
	spec := vmm.Spec{
		ID: id, Name: "one", Dir: vmDir,
		Kernel: vmm.Kernel{VMLinux: kernel, Cmdline: "banger.cfg=vdb"},
		Initrd: initrd,
		Disks:  []vmm.Disk{{ID: "root", Path: filepath.Join(vmDir, "root.ext4")}, {ID: "config", Path: filepath.Join(vmDir, "config.img"), ReadOnly: true}},
		CPUs:   2, MemoryMiB: 512,
		Agent: vmm.Agent{Transport: model.TransportVsock, VsockCID: 42, VsockPort: 1024},
	}
	// The helper jails only the VM dir's own disks.
	bad := spec
	bad.Disks = []vmm.Disk{{ID: "root", Path: filepath.Join(store, "other.ext4")}}
	if err := d.Validate(bad); !errors.Is(err, vmm.ErrInvalidSpec) {
		t.Fatalf("disk outside the vm dir: %v", err)
	}

	sctx, scancel := context.WithTimeout(context.Background(), 60*time.Second)
	inst, err := d.Start(sctx, spec)
	scancel()
	if err != nil {
		t.Fatalf("start through the root helper: %v", err)
	}
	if ok, reason := d.Alive(inst); !ok {
		t.Fatalf("vmm not alive: %s", reason)
	}
	// The owner reaches the agent through the helper and leaves the jail's
	// files to it.
	if inst.Agent.JailID != id || len(inst.Files) != 0 {
		t.Errorf("instance agent %+v files %v: want the jail id and no files of the owner's to remove", inst.Agent, inst.Files)
	}

	calls := apiCalls(t, helper, id)
	var got []string
	for _, c := range calls {
		got = append(got, strings.Fields(c)[0]+" "+strings.Fields(c)[1])
	}
	want := []string{"PUT /machine-config", "PUT /boot-source", "PUT /drives/root", "PUT /drives/config", "PUT /vsock", "PUT /actions"}
	if strings.Join(slicesWithout(got, "PUT /mmds/config"), ",") != strings.Join(want, ",") {
		t.Fatalf("api calls through the passed socket:\n got %v\nwant %v", got, want)
	}
	joined := strings.Join(calls, "\n")
	for _, w := range []string{`"kernel_image_path":"vmlinux"`, `"initrd_path":"initrd.img"`, `"path_on_host":"root.ext4"`, `"path_on_host":"config.img"`, `"uds_path":"vsock.sock"`, `"action_type":"InstanceStart"`} {
		if !strings.Contains(joined, w) {
			t.Errorf("api calls lack %s:\n%s", w, joined)
		}
	}

	// A fresh driver (a restarted daemon) re-adopts through the helper,
	// then kills: the helper removes the jail.
	fresh := New(d.cfg)
	if err := fresh.Adopt(context.Background(), inst); err != nil {
		t.Fatalf("adopt through the helper: %v", err)
	}
	if err := fresh.Kill(context.Background(), inst); err != nil {
		t.Fatal(err)
	}
	if ok, _ := d.Alive(inst); ok {
		t.Fatal("vmm survived kill")
	}
	if _, err := os.Stat(cfg.JailDir(id)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("jail left behind: %v", err)
	}
	if err := fresh.Adopt(context.Background(), inst); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("adopt after kill: %v", err)
	}
}

// apiCalls asks the fake for the API calls it recorded, over a fresh
// connection from the helper.
func apiCalls(t *testing.T, h *roothelper.Client, id string) []string {
	t.Helper()
	f, _, err := h.ConnectJailer(context.Background(), id, api.JailerSocketAPI)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := fileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /calls HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var calls []string
	if err := json.NewDecoder(resp.Body).Decode(&calls); err != nil {
		t.Fatal(err)
	}
	return calls
}
