package roothelper

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/bangerdev/banger/internal/api"
)

// On a systemd host the VMM goes into a transient scope: the busctl call
// carries exactly the validated id and pid, as separate arguments.
func TestScopeArgs(t *testing.T) {
	got := scopeArgs(api.VMCgroupAdopt{VMID: "0123abcd", PID: 4242, StartTime: 7})
	want := []string{"call", "--system", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
		"org.freedesktop.systemd1.Manager", "StartTransientUnit", "ssa(sv)a(sa(sv))",
		"banger-vm-0123abcd.scope", "fail", "3", "PIDs", "au", "1", "4242",
		"Description", "s", "banger vm 0123abcd", "CollectMode", "s", "inactive-or-failed", "0"}
	if !slices.Equal(got, want) {
		t.Fatalf("busctl args\n %q\nwant\n %q", got, want)
	}
}

func TestCgroupParsing(t *testing.T) {
	cg := parseProcCgroup("9:name=systemd:/banger/vm-ab\n4:memory:/x\n0::/banger/vm-ab\n")
	if cg[""] != "/banger/vm-ab" || cg["name=systemd"] != "/banger/vm-ab" || len(cg) != 2 {
		t.Fatalf("parsed %v", cg)
	}
	if !inVMCgroup(cg, "ab", false) || inVMCgroup(cg, "abc", false) || inVMCgroup(cg, "ab", true) {
		t.Fatal("inVMCgroup (cgroupfs)")
	}
	if !inVMCgroup(map[string]string{"": "/banger.slice/banger-vm-ab.scope"}, "ab", true) {
		t.Fatal("inVMCgroup (systemd)")
	}
	for exe, ok := range map[string]bool{
		"/usr/bin/qemu-system-x86_64": true, "/usr/bin/qemu-system-x86_64 (deleted)": true,
		"/usr/local/bin/firecracker": true, "/usr/bin/sleep": false, "/usr/bin/qemu-img": false, "/usr/bin/jailer": false,
	} {
		if isVMMExe(exe) != ok {
			t.Errorf("isVMMExe(%q) = %v", exe, !ok)
		}
	}
	mi := filepath.Join(t.TempDir(), "mountinfo")
	os.WriteFile(mi, []byte(`31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:38 /sub /mnt/sub\040dir rw,relatime - cgroup2 cgroup2 rw
`), 0o644)
	s := &cgroupService{mountinfo: mi}
	got, err := s.hierarchies()
	if err != nil || !slices.Equal(got, []string{"/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"}) {
		t.Fatalf("hierarchies %v, %v", got, err)
	}
}
