package roothelper_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/testutil"
	"github.com/bangerdev/banger/internal/vmm"
)

// trackingMounts lists the cgroup2 and name=systemd mount points.
func trackingMounts(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, _ := strings.Cut(sc.Text(), " - ")
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 3 || a[3] != "/" {
			continue
		}
		if b[0] == "cgroup2" || b[0] == "cgroup" && strings.Contains(","+b[2]+",", ",name=systemd,") {
			out = append(out, a[4])
		}
	}
	if len(out) == 0 {
		t.Fatal("no cgroup2 or name=systemd hierarchy mounted")
	}
	return out
}

func procCgroup(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// spawn starts argv as uid/gid, a child of the test process, and kills it
// at cleanup.
func spawn(t *testing.T, uid, gid uint32, argv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func startTime(t *testing.T, pid int) uint64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := vmm.ProcStartTime(pid)
		if err == nil {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestVMCgroupAdopt: the owner's own VMM (a child of the caller, named
// like QEMU, running as the owner) is moved into banger/vm-<id> in every
// tracking hierarchy; every other process the owner names is refused, and
// nothing is moved or created for it.
func TestVMCgroupAdopt(t *testing.T) {
	testutil.RequireRoot(t)
	mounts := trackingMounts(t)
	client, _, _ := startHelper(t, ownerUID)

	dir, err := os.MkdirTemp("", "banger-cgroup-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	fakeQEMU := filepath.Join(dir, "qemu-system-x86_64")
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fakeQEMU, data, 0o755); err != nil {
		t.Fatal(err)
	}

	id, err := model.NewVMID()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, m := range mounts {
			syscall.Rmdir(filepath.Join(m, "banger", "vm-"+id))
		}
	})
	noCgroupDir := func(what string) {
		t.Helper()
		for _, m := range mounts {
			if _, err := os.Lstat(filepath.Join(m, "banger", "vm-"+id)); err == nil {
				t.Fatalf("%s: %s/banger/vm-%s was created", what, m, id)
			}
		}
	}
	adoptAs := func(uid int, pid int, st uint64, vmID string) error {
		return asUser(t, uid, uid, func() error {
			_, err := client.AdoptVMM(context.Background(), vmID, pid, st)
			return err
		})
	}

	rootQEMU := spawn(t, 0, 0, fakeQEMU, "300")
	ownerSleep := spawn(t, ownerUID, ownerUID, sleep, "300")
	// The owner's fake QEMU, but a grandchild: its parent is the shell.
	sh := exec.Command("/bin/sh", "-c", `"$0" 300 & echo $!; wait`, fakeQEMU)
	sh.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: &syscall.Credential{Uid: ownerUID, Gid: ownerUID}}
	out, err := sh.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	grandchild, _ := strconv.Atoi(strings.TrimSpace(line))
	t.Cleanup(func() { syscall.Kill(grandchild, syscall.SIGKILL); sh.Process.Kill(); sh.Wait() })
	// $! is known before the background child has exec'd: wait for it.
	for i := 0; ; i++ {
		if exe, _ := os.Readlink("/proc/" + strconv.Itoa(grandchild) + "/exe"); exe == fakeQEMU {
			break
		}
		if i > 500 {
			t.Fatalf("grandchild %d never ran %s", grandchild, fakeQEMU)
		}
		time.Sleep(10 * time.Millisecond)
	}
	ownerQEMU := spawn(t, ownerUID, ownerUID, fakeQEMU, "300")

	before := map[int]string{}
	for _, pid := range []int{1, os.Getpid(), rootQEMU.Process.Pid, ownerSleep.Process.Pid, grandchild, ownerQEMU.Process.Pid} {
		before[pid] = procCgroup(t, pid)
	}

	for _, tc := range []struct {
		name   string
		uid    int
		pid    int
		start  uint64
		vmID   string
		code   string
		reason string
	}{
		{"stranger uid", strayUID, ownerQEMU.Process.Pid, startTime(t, ownerQEMU.Process.Pid), id, api.CodePermissionDenied, "permission denied"},
		{"pid 1", ownerUID, 1, startTime(t, 1), id, api.CodeInvalidArgument, "does not name a vmm"},
		{"root's qemu", ownerUID, rootQEMU.Process.Pid, startTime(t, rootQEMU.Process.Pid), id, api.CodePermissionDenied, "not only the owner uid"},
		{"owner's non-vmm", ownerUID, ownerSleep.Process.Pid, startTime(t, ownerSleep.Process.Pid), id, api.CodePermissionDenied, "not a vmm"},
		{"not the caller's child", ownerUID, grandchild, startTime(t, grandchild), id, api.CodePermissionDenied, "not a child of the calling daemon"},
		{"recycled pid", ownerUID, ownerQEMU.Process.Pid, startTime(t, ownerQEMU.Process.Pid) + 1, id, api.CodeNotFound, "another process"},
		{"path in vm id", ownerUID, ownerQEMU.Process.Pid, startTime(t, ownerQEMU.Process.Pid), "../../" + id, api.CodeInvalidArgument, "hex digits"},
		// Refused as root's or as no vmm, depending on which thread
		// asUser's setresuid ran on: either way refused.
		{"the helper itself", ownerUID, os.Getpid(), startTime(t, os.Getpid()), id, api.CodePermissionDenied, ""},
	} {
		err := adoptAs(tc.uid, tc.pid, tc.start, tc.vmID)
		wantCode(t, tc.name, err, tc.code)
		if err != nil && tc.reason != "" && !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%s: error %q does not say %q", tc.name, err, tc.reason)
		}
		noCgroupDir(tc.name)
		for pid, cg := range before {
			if got := procCgroup(t, pid); got != cg {
				t.Fatalf("%s: process %d moved:\n%s\nwas\n%s", tc.name, pid, got, cg)
			}
		}
	}

	// The owner's own VMM, its child: moved, in every tracking hierarchy.
	pid := ownerQEMU.Process.Pid
	res := api.VMCgroupAdopted{}
	err = asUser(t, ownerUID, ownerUID, func() error {
		var err error
		res, err = client.AdoptVMM(context.Background(), id, pid, startTime(t, pid))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Manager != "cgroupfs" || res.Already {
		t.Fatalf("result %+v", res)
	}
	got := procCgroup(t, pid)
	for _, line := range strings.Split(got, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && (parts[0] == "0" || parts[1] == "name=systemd") && parts[2] != "/banger/vm-"+id {
			t.Fatalf("vmm not in its cgroup:\n%s", got)
		}
	}
	for _, m := range mounts {
		b, err := os.ReadFile(filepath.Join(m, "banger", "vm-"+id, "cgroup.procs"))
		if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(pid) {
			t.Fatalf("%s/banger/vm-%s holds %q, want %d: %v", m, id, b, pid, err)
		}
	}
	// Again (a re-adopting daemon): nothing to do.
	err = asUser(t, ownerUID, ownerUID, func() error {
		var err error
		res, err = client.AdoptVMM(context.Background(), id, pid, startTime(t, pid))
		return err
	})
	if err != nil || !res.Already {
		t.Fatalf("second adopt: %+v, %v", res, err)
	}
	// The others did not move along.
	for p, cg := range before {
		if p == pid {
			continue
		}
		if got := procCgroup(t, p); got != cg {
			t.Fatalf("process %d moved:\n%s\nwas\n%s", p, got, cg)
		}
	}
	ownerQEMU.Process.Kill()
	ownerQEMU.Wait()
}
