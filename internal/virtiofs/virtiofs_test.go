package virtiofs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/testutil"
	"github.com/bangerdev/banger/internal/vmm"
)

// The test binary doubles as the launcher, as bangerd does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == SandboxArg {
		os.Exit(SandboxMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == credSwitchArg {
		os.Exit(credSwitchChild())
	}
	os.Exit(m.Run())
}

func TestValidTag(t *testing.T) {
	for tag, want := range map[string]bool{
		"banger0": true, "a": true, strings.Repeat("a", 36): true,
		"": false, strings.Repeat("a", 37): false, "A": false, "a,b": false, "a b": false, "-a": false, "a=b": false,
	} {
		if ValidTag(tag) != want {
			t.Errorf("ValidTag(%q) = %v", tag, !want)
		}
	}
}

func TestCheckSource(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A symlink is resolved: virtiofsd gets the real, clean path.
	if got, err := CheckSource(filepath.Join(dir, "link", "."), false); err != nil || got != real {
		t.Errorf("CheckSource(link) = %q, %v; want %q", got, err, real)
	}
	for p, want := range map[string]string{
		"":                              "empty host directory",
		file:                            "is not a directory",
		filepath.Join(dir, "missing"):   "no such file",
		filepath.Join(file, "below"):    "not a directory",
		filepath.Join(dir, "link/../x"): "no such file",
	} {
		if _, err := CheckSource(p, false); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckSource(%q) = %v, want an error with %q", p, err, want)
		}
	}
}

func TestSandboxMainUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"rw", "/x"}, {"xx", "/x", "--", "/bin/true"}, {"rw", "/x", "-", "/bin/true"}} {
		if code := SandboxMain(args); code != 2 {
			t.Errorf("SandboxMain(%q) = %d, want 2 (usage)", args, code)
		}
	}
}

// TestStartReadOnlyInUserNamespace starts the real virtiofsd for a
// read-only share and checks, from the outside, what it runs as: in its
// own user namespace mapping uid and gid 0 to this process's ids and
// nothing else, the source bind-mounted read-only in its mount namespace
// (the host's mount table untouched), listening on the socket; then it is
// killed and leaves nothing behind.
func TestStartReadOnlyInUserNamespace(t *testing.T) {
	testutil.RequireBinary(t, DefaultBinary)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	hostMounts, _ := os.ReadFile("/proc/self/mountinfo")
	sock := filepath.Join(dir, "fs.sock")
	cfg := Config{Launcher: exe, UID: os.Geteuid(), GID: os.Getegid()}
	p, err := Start(context.Background(), cfg, Share{Tag: "t0", Source: src, ReadOnly: true}, sock, filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer vmm.KillAndWait(context.Background(), p.PID, p.StartTime, 5*time.Second)
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.PID)); strings.TrimSpace(string(comm)) != "virtiofsd" {
		t.Errorf("process %d is %q, want virtiofsd", p.PID, comm)
	}
	uidMap, _ := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", p.PID))
	if f := strings.Fields(string(uidMap)); len(f) != 3 || f[0] != "0" || f[1] != fmt.Sprint(os.Geteuid()) || f[2] != "1" {
		t.Errorf("uid_map = %q, want 0 -> %d, one id", uidMap, os.Geteuid())
	}
	mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", p.PID))
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 5 && f[4] == src {
			found = true
			if !strings.HasPrefix(f[5], "ro") {
				t.Errorf("share mount options %q, want ro", f[5])
			}
		}
	}
	if !found {
		t.Errorf("no bind mount of %s in virtiofsd's mount namespace:\n%s", src, mi)
	}
	if after, _ := os.ReadFile("/proc/self/mountinfo"); string(after) != string(hostMounts) {
		t.Errorf("the host's mount table changed")
	}
	if st, err := os.Stat(sock); err != nil || st.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket %s: %v", sock, err)
	}
	if err := vmm.KillAndWait(context.Background(), p.PID, p.StartTime, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestStartRefusesBadInput: checks before anything runs, and a virtiofsd
// that dies at once is reported with its output, its socket removed.
func TestStartRefusesBadInput(t *testing.T) {
	testutil.RequireBinary(t, DefaultBinary)
	exe, _ := os.Executable()
	dir := t.TempDir()
	cfg := Config{Launcher: exe, UID: os.Geteuid(), GID: os.Getegid()}
	sock := filepath.Join(dir, "fs.sock")
	for name, sh := range map[string]Share{
		"bad tag":  {Tag: "a,b", Source: dir},
		"relative": {Tag: "a", Source: "rel"},
		"unclean":  {Tag: "a", Source: dir + "/."},
	} {
		if _, err := Start(context.Background(), cfg, sh, sock, filepath.Join(dir, "log")); err == nil {
			t.Errorf("%s: Start succeeded", name)
		}
	}
	_, err := Start(context.Background(), cfg, Share{Tag: "a", Source: filepath.Join(dir, "missing")}, sock, filepath.Join(dir, "log"))
	if err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("missing source: %v", err)
	}
	if _, err := os.Lstat(sock); err == nil {
		t.Errorf("socket left after a failed start")
	}
	if _, err := Start(context.Background(), Config{UID: 0}, Share{Tag: "a", Source: dir}, sock, ""); err == nil {
		t.Errorf("Start without a launcher succeeded")
	}
}

const credSwitchArg = "--test-nocredswitch"

// credSwitchChild installs the filter, then asks to become uid and gid
// 4242 the way virtiofsd does (setresuid/setresgid of the effective ids).
func credSwitchChild() int {
	if err := noCredSwitch(); err != nil {
		fmt.Println("filter:", err)
		return 1
	}
	errG := unix.Setresgid(-1, 4242, -1)
	errU := unix.Setresuid(-1, 4242, -1)
	fmt.Printf("setresgid=%v setresuid=%v euid=%d egid=%d\n", errG, errU, unix.Geteuid(), unix.Getegid())
	return 0
}

// TestNoCredSwitch: under the filter, setresuid and setresgid report
// success and change nothing (run as root, a real switch would succeed
// and change the effective ids; as another user it would fail).
func TestNoCredSwitch(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(exe, credSwitchArg).CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	want := fmt.Sprintf("setresgid=<nil> setresuid=<nil> euid=%d egid=%d\n", os.Geteuid(), os.Getegid())
	if string(out) != want {
		t.Fatalf("child printed %q, want %q", out, want)
	}
}
