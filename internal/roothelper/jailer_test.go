package roothelper_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/jailer"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/roothelper"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
)

// jailReport is what the fake jailer (testdata/fakejailer) says of itself.
type jailReport struct {
	Argv      []string `json:"argv"`
	UIDBefore int      `json:"uid_before"`
	UID, EUID int
	GID, EGID int
	Groups    []int `json:"groups"`
	Files     []struct {
		Name   string `json:"name"`
		Mode   uint32 `json:"mode"`
		UID    uint32 `json:"uid"`
		GID    uint32 `json:"gid"`
		Ino    uint64 `json:"ino"`
		SHA256 string `json:"sha256"`
	} `json:"files"`
	Cgroup string `json:"cgroup"`
}

type jailFixture struct {
	client  *roothelper.Client
	sock    string
	cfg     jailer.Config
	home    string
	vmsDir  string
	fake    string
	secrets map[string]string // sentinel path → its fingerprint
}

// buildFakeJailer builds testdata/fakejailer into a root-owned directory
// (the helper runs only root-owned binaries).
func buildFakeJailer(t *testing.T) (jailerBin, fcBin string) {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("go toolchain not on PATH: %v", err)
	}
	dir, err := os.MkdirTemp("", "banger-fakejailer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	jailerBin = filepath.Join(dir, "jailer")
	cmd := exec.Command("go", "build", "-o", jailerBin, "./testdata/fakejailer")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build fake jailer: %v\n%s", err, out)
	}
	fcBin = filepath.Join(dir, "firecracker")
	if err := os.WriteFile(fcBin, []byte("#!/bin/sh\necho 'Firecracker v1.7.0'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return jailerBin, fcBin
}

// sentinel makes a root-only secret file and remembers its fingerprint.
func (f *jailFixture) sentinel(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("root secret "+name+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.secrets[p] = fingerprint(t, p)
	return p
}

// fingerprint is a file's content hash, mode, owner and link count.
func fingerprint(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	sum := sha256.Sum256(b)
	return fmt.Sprintf("%x mode=%o uid=%d gid=%d", sum, st.Mode, st.Uid, st.Gid)
}

func newJailFixture(t *testing.T) *jailFixture {
	t.Helper()
	return newJailFixtureWith(t, nil)
}

// newJailFixtureWith lets the test change the helper's settings (given the
// owner's home) before the helper starts.
func newJailFixtureWith(t *testing.T, mutate func(cfg *jailer.Config, home string)) *jailFixture {
	t.Helper()
	testutil.RequireRoot(t)
	trackingMounts(t)
	jb, fb := buildFakeJailer(t)
	base, err := os.MkdirTemp("", "banger-jails-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	home, err := os.MkdirTemp("", "banger-jail-home-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	os.Chmod(home, 0o755)
	vms := filepath.Join(home, "state", "vms")
	if err := os.MkdirAll(vms, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(home, "state"), vms} {
		os.Chown(d, ownerUID, ownerUID)
	}
	t.Setenv("BANGER_HOME", home) // the helper finds the owner's VM dirs from it
	cfg := jailer.Config{FirecrackerBinary: fb, JailerBinary: jb, UIDStart: 1900000000, UIDCount: 3, CgroupVersion: "2", ChrootBase: filepath.Join(base, "jail")}
	if mutate != nil {
		mutate(&cfg, home)
	}
	c, sock, _ := startHelperWith(t, roothelper.Options{OwnerUID: ownerUID, Jailer: cfg, JailerStartTimeout: 20 * time.Second})
	f := &jailFixture{client: c, sock: sock, cfg: cfg, home: home, vmsDir: vms, fake: jb, secrets: map[string]string{}}
	if _, err := os.Stat("/etc/shadow"); err == nil {
		f.secrets["/etc/shadow"] = fingerprint(t, "/etc/shadow")
	}
	return f
}

// vmDir makes an owner's VM dir with the files a jail takes.
func (f *jailFixture) vmDir(t *testing.T) (id, dir string) {
	t.Helper()
	id, err := model.NewVMID()
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(f.vmsDir, id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"vmlinux": "ELF kernel " + id, "initrd.img": "initrd " + id, "root.ext4": "root disk " + id, "config.img": "config " + id} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chown(p, ownerUID, ownerUID)
	}
	os.Chown(dir, ownerUID, ownerUID)
	t.Cleanup(func() { f.client.StopJailer(context.Background(), id) })
	return id, dir
}

func (f *jailFixture) start(t *testing.T, uid int, id string) (*os.File, api.VMJailerStarted, error) {
	t.Helper()
	var file *os.File
	var res api.VMJailerStarted
	err := asUser(t, uid, uid, func() error {
		var err error
		file, res, err = f.client.StartJailer(context.Background(), id)
		return err
	})
	return file, res, err
}

// get speaks one HTTP request over a connection the helper passed.
func get(t *testing.T, file *os.File, path string, v any) {
	t.Helper()
	conn, err := net.FileConn(file)
	file.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("http over the passed socket: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// assertClean: no jail, no fake jailer process, sentinels untouched.
func (f *jailFixture) assertClean(t *testing.T, what, id string) {
	t.Helper()
	if _, err := os.Lstat(f.cfg.JailDir(id)); err == nil {
		t.Errorf("%s: jail %s left behind", what, f.cfg.JailDir(id))
	}
	for _, m := range mustTrackingMounts(t) {
		if _, err := os.Lstat(filepath.Join(m, "banger", "vm-"+id)); err == nil {
			t.Errorf("%s: cgroup %s/banger/vm-%s left behind", what, m, id)
		}
	}
	matches, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, m := range matches {
		if b, err := os.ReadFile(m); err == nil && strings.HasPrefix(string(b), f.fake+"\x00") && strings.Contains(string(b), "\x00"+id+"\x00") {
			if st, _ := os.ReadFile(filepath.Join(filepath.Dir(m), "stat")); !strings.Contains(string(st), ") Z ") {
				t.Errorf("%s: fake jailer of vm %s still runs: %s", what, id, m)
			}
		}
	}
	for p, want := range f.secrets {
		if got := fingerprint(t, p); got != want {
			t.Errorf("%s: %s changed: %s, was %s", what, p, got, want)
		}
	}
}

func mustTrackingMounts(t *testing.T) []string { return trackingMounts(t) }

// TestJailerStartFakeJailer runs the helper's real vm.jailer.* methods
// with a fake jailer binary that reports its argv, its ids after the
// switch and the chroot's files over the API socket the helper passed.
func TestJailerStartFakeJailer(t *testing.T) {
	f := newJailFixture(t)
	id, dir := f.vmDir(t)
	disk := filepath.Join(dir, "root.ext4")
	diskBefore := fingerprint(t, disk)

	file, res, err := f.start(t, ownerUID, id)
	if err != nil {
		t.Fatalf("vm.jailer.start: %v", err)
	}
	if !f.cfg.InRange(res.UID) || res.GID != res.UID {
		t.Fatalf("jail ids %d/%d outside the range %d+%d", res.UID, res.GID, f.cfg.UIDStart, f.cfg.UIDCount)
	}
	var rep jailReport
	get(t, file, "/jail", &rep)

	wantArgv := []string{"--id", id, "--exec-file", f.cfg.FirecrackerBinary, "--uid", strconv.Itoa(res.UID), "--gid", strconv.Itoa(res.GID),
		"--chroot-base-dir", f.cfg.ChrootBase, "--cgroup-version", "2", "--", "--api-sock", "/api.sock"}
	if !slices.Equal(rep.Argv, wantArgv) {
		t.Errorf("jailer argv\n got %q\nwant %q", rep.Argv, wantArgv)
	}
	if rep.UIDBefore != 0 || rep.UID != res.UID || rep.EUID != res.UID || rep.GID != res.GID || rep.EGID != res.GID || len(rep.Groups) != 0 {
		t.Errorf("jailer ran as uid %d, then uid %d/%d gid %d/%d groups %v; want root, then %d", rep.UIDBefore, rep.UID, rep.EUID, rep.GID, rep.EGID, rep.Groups, res.UID)
	}
	if cg := procCgroup(t, res.PID); !strings.Contains(cg, "/banger/vm-"+id+"\n") {
		t.Errorf("jailer not in its vm's cgroup: %s", cg)
	}
	// The chroot holds exactly the VM's files (copies of the read-only
	// ones, the root disk itself) and the sockets.
	var st syscall.Stat_t
	if err := syscall.Stat(disk, &st); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, fi := range rep.Files {
		names = append(names, fi.Name)
		switch fi.Name {
		case "vmlinux", "initrd.img", "config.img":
			want := sha256.Sum256([]byte(map[string]string{"vmlinux": "ELF kernel ", "initrd.img": "initrd ", "config.img": "config "}[fi.Name] + id))
			if fi.SHA256 != hex.EncodeToString(want[:]) || fi.UID != uint32(res.UID) || fi.Mode&0o777 != 0o400 {
				t.Errorf("%s in the jail: %+v", fi.Name, fi)
			}
		case "root.ext4":
			if fi.Ino != st.Ino {
				t.Errorf("root.ext4 in the jail is inode %d, not the owner's disk %d", fi.Ino, st.Ino)
			}
		}
	}
	slices.Sort(names)
	if want := []string{"api.sock", "config.img", "initrd.img", "root.ext4", "vmlinux", "vsock.sock"}; !slices.Equal(names, want) {
		t.Errorf("chroot holds %v, want %v", names, want)
	}
	// While it runs the disk stays the owner's, writable by the jail's gid.
	if st.Uid != ownerUID || st.Gid != uint32(res.GID) || st.Mode&0o060 != 0o060 {
		t.Errorf("root disk while jailed: uid %d gid %d mode %o", st.Uid, st.Gid, st.Mode)
	}
	cons, err := os.ReadFile(filepath.Join(dir, "console.log"))
	if err != nil || !strings.Contains(string(cons), "fake-jailer: serving as uid "+strconv.Itoa(res.UID)) {
		t.Errorf("console log (the jailer's output): %q %v", cons, err)
	}
	if sid, err := unix.Getsid(res.PID); err != nil || sid != res.PID {
		t.Errorf("jailer not in its own session: sid %d, %v", sid, err)
	}

	// Re-adoption: fresh connections to both sockets, checked against the
	// record; a second start is refused.
	for _, sock := range []string{api.JailerSocketAPI, api.JailerSocketVsock} {
		var again *os.File
		var res2 api.VMJailerStarted
		err := asUser(t, ownerUID, ownerUID, func() error {
			var err error
			again, res2, err = f.client.ConnectJailer(context.Background(), id, sock)
			return err
		})
		if err != nil {
			t.Fatalf("vm.jailer.connect %s: %v", sock, err)
		}
		var r2 jailReport
		get(t, again, "/jail", &r2)
		if res2.PID != res.PID || res2.StartTime != res.StartTime || r2.UID != res.UID {
			t.Errorf("connect %s reached %+v / uid %d, want pid %d", sock, res2, r2.UID, res.PID)
		}
	}
	// A restarted helper (a second one, with the same settings) finds the
	// jail from its record and reaches the same process.
	restarted, _, _ := startHelperWith(t, roothelper.Options{OwnerUID: ownerUID, Jailer: f.cfg})
	var again *os.File
	var res3 api.VMJailerStarted
	if err := asUser(t, ownerUID, ownerUID, func() error {
		var err error
		again, res3, err = restarted.ConnectJailer(context.Background(), id, api.JailerSocketAPI)
		return err
	}); err != nil {
		t.Fatalf("connect through a restarted helper: %v", err)
	}
	var r3 jailReport
	get(t, again, "/jail", &r3)
	if res3.PID != res.PID || r3.UID != res.UID {
		t.Errorf("restarted helper reached pid %d uid %d, want %d %d", res3.PID, r3.UID, res.PID, res.UID)
	}
	if _, _, err := f.start(t, ownerUID, id); api.CodeOf(err) != api.CodeAlreadyExists {
		t.Errorf("second start: %v, want already_exists", err)
	}
	second, _ := f.vmDir(t)
	file2, res2, err := f.start(t, ownerUID, second)
	if err != nil {
		t.Fatalf("start a second vm: %v", err)
	}
	file2.Close()
	if res2.UID == res.UID {
		t.Errorf("two jails share uid %d", res.UID)
	}

	// Stop: the process is gone, the disk's group and mode are back, the
	// jail is removed; a second stop is a no-op and connect finds nothing.
	if err := asUser(t, ownerUID, ownerUID, func() error { return f.client.StopJailer(context.Background(), id) }); err != nil {
		t.Fatalf("vm.jailer.stop: %v", err)
	}
	if err := unix.Kill(res.PID, 0); err == nil {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", res.PID)); !strings.Contains(string(b), ") Z ") {
			t.Errorf("jailer %d survived stop", res.PID)
		}
	}
	if got := fingerprint(t, disk); got != diskBefore {
		t.Errorf("root disk after stop: %s, was %s", got, diskBefore)
	}
	f.assertClean(t, "after stop", id)
	if err := f.client.StopJailer(context.Background(), id); err != nil {
		t.Errorf("second stop: %v", err)
	}
	if _, _, err := f.client.ConnectJailer(context.Background(), id, api.JailerSocketAPI); api.CodeOf(err) != api.CodeNotFound {
		t.Errorf("connect after stop: %v, want not_found", err)
	}
	if err := f.client.StopJailer(context.Background(), second); err != nil {
		t.Fatal(err)
	}
	f.assertClean(t, "after second stop", second)
}

// TestJailerStartRefusesHostileRequests attacks vm.jailer.start as the
// owner: bad ids, another user's VM, extra fields (a uid of its choosing),
// links planted in the VM dir to root's files, a stranger's uid. Each is
// refused, and nothing is left: no jail, no cgroup, no process, the
// sentinels (and /etc/shadow) unchanged, no root file in any chroot.
func TestJailerStartRefusesHostileRequests(t *testing.T) {
	f := newJailFixture(t)
	secretDir, err := os.MkdirTemp("", "banger-jail-secret-") // root-only, same filesystem as the VM dirs
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(secretDir) })
	secret := f.sentinel(t, secretDir, "secret")
	// A world-readable root file (as /etc/passwd): the owner can open it,
	// so only the ownership check stands between it and the jail.
	linked := filepath.Join(secretDir, "linked")
	if err := os.WriteFile(linked, []byte("root readable\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(secretDir, 0o755)
	f.secrets[linked] = fingerprint(t, linked)
	ctx := context.Background()

	for _, bad := range []string{"", "../x", "..", "ABCDEF", "0123/../../etc", "0123\x00", strings.Repeat("a", 65), "-1"} {
		_, _, err := f.start(t, ownerUID, bad)
		wantCode(t, fmt.Sprintf("id %q", bad), err, api.CodeInvalidArgument)
	}

	// A uid (or any path) cannot even be expressed: unknown fields refuse
	// the request.
	id, _ := f.vmDir(t)
	raw := rpc.NewClient(f.sock)
	for _, params := range []map[string]any{
		{"vm_id": id, "uid": 0},
		{"vm_id": id, "gid": 0},
		{"vm_id": id, "jailer_binary": "/bin/sh"},
		{"vm_id": id, "chroot_base": "/"},
	} {
		err := asUser(t, ownerUID, ownerUID, func() error {
			err := raw.CallRaw(ctx, api.MethodHelperVMJailerStart.Name, params, nil)
			return err
		})
		wantCode(t, fmt.Sprintf("params %v", params), err, api.CodeInvalidArgument)
		f.assertClean(t, fmt.Sprintf("params %v", params), id)
	}

	// A stranger's uid is refused by the helper as a whole.
	_, _, err = f.start(t, strayUID, id)
	wantCode(t, "stranger", err, api.CodePermissionDenied)
	f.assertClean(t, "stranger", id)

	cases := []struct {
		name  string
		setup func(t *testing.T, dir string)
		code  string
	}{
		{"no vm dir", func(t *testing.T, dir string) { os.RemoveAll(dir) }, api.CodeNotFound},
		{"another user's vm", func(t *testing.T, dir string) { chownAll(t, dir, strayUID) }, api.CodePermissionDenied},
		{"root disk links to a root file", func(t *testing.T, dir string) { replaceWithSymlink(t, dir, "root.ext4", secret) }, api.CodeFailedPrecondition},
		{"root disk links to a readable root file", func(t *testing.T, dir string) { replaceWithSymlink(t, dir, "root.ext4", linked) }, api.CodeFailedPrecondition},
		{"kernel links to /etc/shadow", func(t *testing.T, dir string) { replaceWithSymlink(t, dir, "vmlinux", "/etc/shadow") }, api.CodeFailedPrecondition},
		{"config disk links to a root file", func(t *testing.T, dir string) { replaceWithSymlink(t, dir, "config.img", secret) }, api.CodeFailedPrecondition},
		{"console links to a root file", func(t *testing.T, dir string) { replaceWithSymlink(t, dir, "console.log", secret) }, api.CodeFailedPrecondition},
		{"root disk hard-linked to a root file", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "root.ext4"))
			if err := os.Link(linked, filepath.Join(dir, "root.ext4")); err != nil {
				t.Fatal(err)
			}
		}, api.CodePermissionDenied},
		{"initrd is a directory", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "initrd.img"))
			os.Mkdir(filepath.Join(dir, "initrd.img"), 0o755)
			os.Chown(filepath.Join(dir, "initrd.img"), ownerUID, ownerUID)
		}, api.CodePermissionDenied},
		{"vm dir is a link to a root dir", func(t *testing.T, dir string) {
			os.RemoveAll(dir)
			if err := os.Symlink(secretDir, dir); err != nil {
				t.Fatal(err)
			}
			os.Lchown(dir, ownerUID, ownerUID)
		}, api.CodeFailedPrecondition},
	}
	for _, tc := range cases {
		id, dir := f.vmDir(t)
		disk := filepath.Join(dir, "root.ext4")
		tc.setup(t, dir)
		diskBefore := ""
		if fi, err := os.Lstat(disk); err == nil && fi.Mode().IsRegular() {
			diskBefore = fingerprint(t, disk)
		}
		file, _, err := f.start(t, ownerUID, id)
		if file != nil {
			file.Close()
		}
		wantCode(t, tc.name, err, tc.code)
		f.assertClean(t, tc.name, id)
		if diskBefore != "" {
			if got := fingerprint(t, disk); got != diskBefore {
				t.Errorf("%s: root disk changed: %s, was %s", tc.name, got, diskBefore)
			}
		}
	}
}

// TestJailerStartRaceSwapsDisk: while the helper builds jails, the owner
// keeps swapping its root disk for a link to a root file. Whatever the
// timing, a jail only ever holds the owner's own disk, and the root file
// is never linked, read or changed.
func TestJailerStartRaceSwapsDisk(t *testing.T) {
	f := newJailFixture(t)
	secretDir, err := os.MkdirTemp("", "banger-jail-secret-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(secretDir) })
	secret := f.sentinel(t, secretDir, "secret")
	id, dir := f.vmDir(t)
	disk := filepath.Join(dir, "root.ext4")
	var st syscall.Stat_t
	if err := syscall.Stat(disk, &st); err != nil {
		t.Fatal(err)
	}
	diskBefore := fingerprint(t, disk)
	real := filepath.Join(dir, "real.ext4")
	link := filepath.Join(dir, "link.ext4")
	if err := os.Link(disk, real); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // the owner's swapper, bounded by the test's rounds
		defer close(done)
		tmp := filepath.Join(dir, "swap.tmp")
		for i := 0; i < 1_000_000; i++ {
			select {
			case <-stop:
				os.Remove(tmp)
				os.Link(real, tmp)
				os.Rename(tmp, disk)
				return
			default:
			}
			src := real
			if i%2 == 1 {
				src = link
			}
			os.Remove(tmp)
			if src == real {
				os.Link(real, tmp)
			} else {
				os.Symlink(secret, tmp)
			}
			os.Rename(tmp, disk)
		}
	}()
	started, refused := 0, 0
	for round := 0; round < 12; round++ {
		file, _, err := f.start(t, ownerUID, id)
		if err != nil {
			refused++
			f.assertClean(t, fmt.Sprintf("round %d refused", round), id)
			continue
		}
		started++
		var rep jailReport
		get(t, file, "/jail", &rep)
		for _, fi := range rep.Files {
			if fi.Name == "root.ext4" && fi.Ino != st.Ino {
				t.Errorf("round %d: the jail holds inode %d, not the owner's disk %d", round, fi.Ino, st.Ino)
			}
		}
		if err := f.client.StopJailer(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		f.assertClean(t, fmt.Sprintf("round %d stopped", round), id)
	}
	close(stop)
	<-done
	if got := fingerprint(t, real); got != diskBefore {
		t.Errorf("root disk after the rounds: %s, was %s (group and mode not given back)", got, diskBefore)
	}
	t.Logf("%d rounds started, %d refused", started, refused)
}

func chownAll(t *testing.T, dir string, uid int) {
	t.Helper()
	filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			os.Lchown(p, uid, uid)
		}
		return nil
	})
}

func replaceWithSymlink(t *testing.T, dir, name, target string) {
	t.Helper()
	p := filepath.Join(dir, name)
	os.Remove(p)
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
	os.Lchown(p, ownerUID, ownerUID)
}

// TestJailerChrootBaseOwnerWritable: settings that put the jails where the
// owner can write are refused before anything is made there, as are
// binaries root does not own.
func TestJailerChrootBaseOwnerWritable(t *testing.T) {
	var ownerDir string
	f := newJailFixtureWith(t, func(cfg *jailer.Config, home string) {
		ownerDir = filepath.Join(home, "owned")
		os.Mkdir(ownerDir, 0o755)
		os.Chown(ownerDir, ownerUID, ownerUID)
		cfg.ChrootBase = filepath.Join(ownerDir, "jails")
	})
	id, _ := f.vmDir(t)
	_, _, err := f.start(t, ownerUID, id)
	wantCode(t, "chroot base in the owner's dir", err, api.CodeFailedPrecondition)
	if entries, _ := os.ReadDir(ownerDir); len(entries) != 0 {
		t.Errorf("the helper made %v in the owner's directory", entries)
	}
	f.assertClean(t, "chroot base in the owner's dir", id)

	g := newJailFixtureWith(t, func(cfg *jailer.Config, home string) {
		fake := filepath.Join(filepath.Dir(cfg.JailerBinary), "owned-jailer")
		b, _ := os.ReadFile(cfg.JailerBinary)
		os.WriteFile(fake, b, 0o755)
		os.Chown(fake, ownerUID, ownerUID)
		cfg.JailerBinary = fake
	})
	id, _ = g.vmDir(t)
	_, _, err = g.start(t, ownerUID, id)
	wantCode(t, "jailer binary the owner owns", err, api.CodeFailedPrecondition)
	g.assertClean(t, "jailer binary the owner owns", id)
}
