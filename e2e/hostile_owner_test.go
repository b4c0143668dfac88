package e2e

import (
	"crypto/sha256"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/installmeta"
	"github.com/bangerdev/banger/internal/supervisor"
	"golang.org/x/sys/unix"
)

// The owner of a system install is untrusted by root: it can write its
// state directory (/var/lib/banger/home) and race root's file operations
// there. These tests play that owner with a real second uid
// (banger-e2e-owner) against the real root processes (`banger system
// install`, `banger daemon start` and the supervisor they run, the root
// helper), planting symlinks and swapping directories before and during
// their start, and check that nothing outside the intended place changed:
// hash, mode and owner of sentinel files and directories, and no foreign
// process signalled.

// envHostileRacer makes the test binary a racer (see TestMain): it swaps
// two directory entries with RENAME_EXCHANGE in a loop, as the owner.
const envHostileRacer = "BANGER_E2E_HOSTILE_RACER"

// hostileOwnerRacerMain swaps args[0] and args[1] (RENAME_EXCHANGE) until
// the file args[2] exists, at most args[3] swaps or for one minute.
func hostileOwnerRacerMain(spec string) int {
	a := strings.Split(spec, "\n")
	if len(a) != 4 {
		fmt.Fprintln(os.Stderr, "racer: bad spec")
		return 2
	}
	max, _ := strconv.Atoi(a[3])
	deadline := time.Now().Add(time.Minute)
	swaps := 0
	for i := 0; i < max && time.Now().Before(deadline); i++ {
		if i%256 == 0 {
			if _, err := os.Lstat(a[2]); err == nil {
				break
			}
		}
		if unix.Renameat2(unix.AT_FDCWD, a[0], unix.AT_FDCWD, a[1], unix.RENAME_EXCHANGE) == nil {
			swaps++
		}
	}
	fmt.Printf("swaps=%d\n", swaps)
	return 0
}

// hostileOwner is the install plus the owner's identity.
type hostileOwner struct {
	*sysInstall
	uid, gid uint32
}

func hostileOwnerSetup(t *testing.T) *hostileOwner {
	t.Helper()
	s := installSystem(t)
	uid, gid := ensureTestUser(t, smokeOwner)
	return &hostileOwner{sysInstall: s, uid: uid, gid: gid}
}

// asOwner runs a shell command as the owner uid (a real second user).
func (h *hostileOwner) asOwner(t *testing.T, script string) {
	t.Helper()
	cmd := exec.Command("sh", "-ec", script)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: h.uid, Gid: h.gid}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as owner: %s: %v\n%s", script, err, out)
	}
}

// hostileOwnerSentinels makes a root-owned directory outside the owner's
// reach holding a root-owned file, the targets the owner aims root at.
func hostileOwnerSentinels(t *testing.T, root string) (dir, file string) {
	t.Helper()
	dir = filepath.Join(root, "sentinel")
	if err := os.Mkdir(dir, 0o751); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o751); err != nil {
		t.Fatal(err)
	}
	file = filepath.Join(dir, "ld.so.preload")
	if err := os.WriteFile(file, []byte("root's file: must not change\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	return dir, file
}

// hostileOwnerSnapshot records owner, mode and content (a file's hash, a
// directory's entry names) of each path, without following symlinks.
func hostileOwnerSnapshot(t *testing.T, paths ...string) string {
	t.Helper()
	var lines []string
	for _, p := range paths {
		st, err := os.Lstat(p)
		if err != nil {
			lines = append(lines, p+": "+err.Error())
			continue
		}
		sys := st.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s uid=%d gid=%d mode=%v", p, sys.Uid, sys.Gid, st.Mode())
		switch {
		case st.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			line += fmt.Sprintf(" sha256=%x", sha256.Sum256(b))
		case st.IsDir():
			entries, err := os.ReadDir(p)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			sort.Strings(names)
			line += " entries=" + strings.Join(names, ",")
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n")
}

func (h *hostileOwner) sup() *supervisor.Supervisor {
	return &supervisor.Supervisor{System: h.sys, Owner: installmeta.Meta{OwnerUser: smokeOwner, OwnerUID: int(h.uid), OwnerGID: int(h.gid)}}
}

// requireHelperSocketSafe checks the helper's socket: in the root-owned
// run directory, a socket owned by the owner uid, mode 0600.
func (h *hostileOwner) requireHelperSocketSafe() {
	h.t.Helper()
	dir, err := os.Lstat(h.sys.RunDir())
	if err != nil {
		h.t.Fatal(err)
	}
	if ds := dir.Sys().(*syscall.Stat_t); ds.Uid != 0 || dir.Mode().Perm()&0o022 != 0 || !dir.IsDir() {
		h.t.Fatalf("run directory %s: uid %d mode %v, want a root-only-writable directory", h.sys.RunDir(), ds.Uid, dir.Mode())
	}
	st, err := os.Lstat(h.sys.HelperSocket())
	if err != nil {
		h.t.Fatalf("helper socket: %v", err)
	}
	if ss := st.Sys().(*syscall.Stat_t); ss.Uid != h.uid || st.Mode().Type() != os.ModeSocket || st.Mode().Perm() != 0o600 {
		h.t.Fatalf("helper socket: uid %d mode %v, want the owner's 0600 socket", ss.Uid, st.Mode())
	}
}

// restartHelper kills the running helper (as a crash or a systemd restart
// would end it) and starts it again through `banger daemon start` as root.
// Only the helper must come up: the daemon's part may be refused because
// of what the owner planted in its own state.
func (h *hostileOwner) restartHelper() string {
	h.t.Helper()
	if pid := h.sup().HelperPID(); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		waitGone(h.t, pid)
	}
	out, errOut, _ := h.banger("daemon", "start")
	if h.sup().HelperPID() == 0 {
		h.t.Fatalf("root helper did not start:\n%s%s\nhelper log:\n%s", out, errOut, readFile(h.sys.HelperLog()))
	}
	return out + errOut
}

// The old attacks on the helper's log and socket: the owner points the
// places root used to write (state/logs/root-helper.log, the run directory)
// at root's files. The helper's log and socket now live in root-owned
// directories; the planted links are never followed.
func TestHostileOwnerPlantsHelperLogAndSocketLinks(t *testing.T) {
	h := hostileOwnerSetup(t)
	dir, file := hostileOwnerSentinels(t, h.root)
	u := h.sys.User()
	if out, errOut, code := h.banger("daemon", "stop"); code != 0 {
		t.Fatalf("daemon stop: exit %d\n%s%s", code, out, errOut)
	}
	h.asOwner(t, fmt.Sprintf(`ln -sfn %s %s/root-helper.log
rm -rf %s && ln -sfn %s %s`, file, u.LogDir(), u.Runtime, dir, u.Runtime))
	before := hostileOwnerSnapshot(t, dir, file)
	h.restartHelper()
	if after := hostileOwnerSnapshot(t, dir, file); after != before {
		t.Fatalf("a restart of the helper changed root's files through the owner's links:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	h.requireHelperSocketSafe()
	hl, err := os.Lstat(h.sys.HelperLog())
	if err != nil {
		t.Fatalf("helper log: %v", err)
	}
	if hs := hl.Sys().(*syscall.Stat_t); hs.Uid != 0 || !hl.Mode().IsRegular() || hl.Mode().Perm() != 0o600 {
		t.Fatalf("helper log %s: uid %d mode %v, want root's 0600 file", h.sys.HelperLog(), hs.Uid, hl.Mode())
	}
	if !strings.Contains(readFile(h.sys.HelperLog()), "root helper listening") {
		t.Fatalf("helper log lacks its start line:\n%s", readFile(h.sys.HelperLog()))
	}
}

// The owner replaces its state directory, then its log directory, by a
// symlink to a root-owned directory: starting the daemon as root refuses
// with a clear error and neither chowns, chmods nor creates anything there.
func TestHostileOwnerSymlinkedStateRefused(t *testing.T) {
	h := hostileOwnerSetup(t)
	dir, file := hostileOwnerSentinels(t, h.root)
	u := h.sys.User()
	for _, victim := range []string{u.State, u.LogDir()} {
		t.Run(filepath.Base(victim), func(t *testing.T) {
			if out, errOut, code := h.banger("daemon", "stop"); code != 0 {
				t.Fatalf("daemon stop: exit %d\n%s%s", code, out, errOut)
			}
			h.asOwner(t, fmt.Sprintf(`mv %[1]s %[1]s.real && ln -sfn %[2]s %[1]s`, victim, dir))
			before := hostileOwnerSnapshot(t, dir, file)
			out, errOut, code := h.banger("daemon", "start")
			if code == 0 {
				t.Fatalf("daemon start through a symlinked %s succeeded:\n%s%s", victim, out, errOut)
			}
			if !strings.Contains(errOut, "symlink") {
				t.Fatalf("daemon start error does not say what was wrong:\n%s", errOut)
			}
			if after := hostileOwnerSnapshot(t, dir, file); after != before {
				t.Fatalf("start changed root's directory through the owner's symlink:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			// Same for a reinstall, which makes the owner's layout.
			out, errOut, code = h.runBin(filepath.Join(binDir, "banger"), "system", "install", "--owner", smokeOwner)
			if code == 0 {
				t.Fatalf("system install through a symlinked %s succeeded:\n%s%s", victim, out, errOut)
			}
			if after := hostileOwnerSnapshot(t, dir, file); after != before {
				t.Fatalf("install changed root's directory through the owner's symlink:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			h.asOwner(t, fmt.Sprintf(`rm %[1]s && mv %[1]s.real %[1]s`, victim))
			if out, errOut, code := h.banger("daemon", "start"); code != 0 {
				t.Fatalf("daemon start after the owner undid the link: exit %d\n%s%s", code, out, errOut)
			}
		})
	}
}

// The owner's pid file (the daemon's own) names a root process whose
// program is called bangerd: neither a reinstall (which restarts the
// daemon) nor a start signals it.
func TestHostileOwnerPidFileDoesNotAimSignals(t *testing.T) {
	h := hostileOwnerSetup(t)
	// A root process that looks like the daemon by name.
	vdir := t.TempDir()
	fake := filepath.Join(vdir, "bangerd")
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, sleep, fake, 0o755)
	victim := exec.Command(fake, "300")
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var werr error
	go func() { werr = victim.Wait(); close(done) }()
	t.Cleanup(func() { _ = victim.Process.Kill(); <-done })

	if out, errOut, code := h.banger("daemon", "stop"); code != 0 {
		t.Fatalf("daemon stop: exit %d\n%s%s", code, out, errOut)
	}
	pidFile := h.sys.User().PidFile()
	h.asOwner(t, fmt.Sprintf(`echo %d > %s`, victim.Process.Pid, pidFile))
	out, errOut, code := h.runBin(filepath.Join(binDir, "banger"), "system", "install", "--owner", smokeOwner)
	if code != 0 {
		t.Fatalf("system install with a forged pid file: exit %d\n%s%s", code, out, errOut)
	}
	select {
	case <-done:
		t.Fatalf("the root process named in the owner's pid file was signalled: %v", werr)
	default:
	}
	if pid := h.daemonPID(); pid == victim.Process.Pid || pid == 0 {
		t.Fatalf("daemon pid %d after install", pid)
	}
}

// The owner swaps its run directory (where the helper's socket used to be)
// and its state directory with symlinks to root's directory in a tight
// RENAME_EXCHANGE loop while root restarts the helper 20 times and
// reinstalls 4 times: root's
// directory and file stay as they were and the socket is always the
// owner's 0600 socket in the root-owned run directory.
func TestHostileOwnerRacesDirectorySwapsDuringHelperRestarts(t *testing.T) {
	h := hostileOwnerSetup(t)
	dir, file := hostileOwnerSentinels(t, h.root)
	u := h.sys.User()
	home := h.sys.Home()
	h.asOwner(t, fmt.Sprintf(`ln -sfn %[1]s %[2]s/decoy-run && ln -sfn %[1]s %[2]s/decoy-state`, dir, home))
	before := hostileOwnerSnapshot(t, dir, file)
	stop := filepath.Join(h.root, "stop-racers")
	var racers []*exec.Cmd
	var outs []*strings.Builder
	// The test binary, copied where the owner may execute it, is the racer.
	racer := filepath.Join(binDir, "hostile-racer.test")
	copyFile(t, mustExecutable(t), racer, 0o755)
	for _, pair := range [][2]string{{u.Runtime, home + "/decoy-run"}, {u.State, home + "/decoy-state"}} {
		cmd := exec.Command(racer)
		cmd.Env = []string{envHostileRacer + "=" + strings.Join([]string{pair[0], pair[1], stop, "50000000"}, "\n"), "PATH=/usr/bin:/bin"}
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: h.uid, Gid: h.gid}}
		var b strings.Builder
		cmd.Stdout, cmd.Stderr = &b, &b
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		racers = append(racers, cmd)
		outs = append(outs, &b)
	}
	stopRacers := func() {
		_ = os.WriteFile(stop, nil, 0o644)
		for _, c := range racers {
			_ = c.Wait()
		}
		racers = nil
	}
	t.Cleanup(stopRacers)
	for i := 0; i < 20; i++ {
		if i%5 == 4 {
			// A reinstall makes the owner's layout and restarts both
			// services; it may refuse a symlink the race hands it.
			_, _, _ = h.runBin(filepath.Join(binDir, "banger"), "system", "install", "--owner", smokeOwner)
		}
		h.restartHelper()
		h.requireHelperSocketSafe()
		if after := hostileOwnerSnapshot(t, dir, file); after != before {
			t.Fatalf("restart %d changed root's files:\nbefore:\n%s\nafter:\n%s", i, before, after)
		}
	}
	stopRacers()
	for _, b := range outs {
		if !strings.Contains(b.String(), "swaps=") || strings.Contains(b.String(), "swaps=0\n") {
			t.Fatalf("a racer did not race: %q", b.String())
		}
		t.Logf("racer: %s", strings.TrimSpace(b.String()))
	}
	if after := hostileOwnerSnapshot(t, dir, file); after != before {
		t.Fatalf("root's files changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// The updater's pre-swap check (`bangerd --check-migrations --system`, run
// by root) reads the owner's store. The owner points state/banger.db at a
// root-only database: the check (and banger doctor as root, which uses it)
// reads it as the owner, so it learns nothing of root's file (its schema
// version, 777, never appears) and creates nothing beside it.
func TestHostileOwnerStoreLinkUnreadableByMigrationCheck(t *testing.T) {
	h := hostileOwnerSetup(t)
	dir, _ := hostileOwnerSentinels(t, h.root)
	secret := filepath.Join(dir, "secret.db")
	db, err := sql.Open("sqlite", "file:"+secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE t(x); PRAGMA user_version = 777"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := os.Chmod(secret, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := h.banger("daemon", "stop"); code != 0 {
		t.Fatalf("daemon stop: exit %d\n%s%s", code, out, errOut)
	}
	store := h.sys.User().StoreFile()
	h.asOwner(t, fmt.Sprintf(`mv %[1]s %[1]s.real && rm -f %[1]s-wal %[1]s-shm && ln -s %[2]s %[1]s`, store, secret))
	before := hostileOwnerSnapshot(t, dir, secret)
	out, errOut, _ := h.runBin(h.sys.BangerdBin(), "--check-migrations", "--system")
	if strings.Contains(out+errOut, "777") {
		t.Fatalf("the check read root's database through the owner's link:\n%s%s", out, errOut)
	}
	if !strings.Contains(out+errOut, "migrate: would fail") && !strings.Contains(out+errOut, "permission denied") {
		t.Fatalf("the check did not report the unreadable store:\n%s%s", out, errOut)
	}
	// banger doctor as root checks the store the same way.
	dout, derr, _ := h.banger("doctor", "--json")
	if strings.Contains(dout+derr, "777") || !strings.Contains(dout, `"store"`) {
		t.Fatalf("doctor as root read root's database through the owner's link (or has no store check):\n%s%s", dout, derr)
	}
	if after := hostileOwnerSnapshot(t, dir, secret); after != before {
		t.Fatalf("the check changed root's directory:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	h.asOwner(t, fmt.Sprintf(`rm %[1]s && mv %[1]s.real %[1]s`, store))
	if out, errOut, code := h.runBin(h.sys.BangerdBin(), "--check-migrations", "--system"); code != 0 || !strings.Contains(out, "migrate: ok") {
		t.Fatalf("check of the owner's real store: exit %d\n%s%s", code, out, errOut)
	}
}

// `banger update` as root restarts both services, runs the pre-swap check
// and the post-restart doctor: with the owner's links planted where root
// used to write the helper's log and where the store is, root's files stay
// as they were and the update still succeeds.
func TestHostileOwnerUpdateWithPlantedLinks(t *testing.T) {
	h := hostileOwnerSetup(t)
	dir, file := hostileOwnerSentinels(t, h.root)
	u := h.sys.User()
	h.asOwner(t, fmt.Sprintf(`ln -sfn %s %s/root-helper.log`, file, u.LogDir()))
	before := hostileOwnerSnapshot(t, dir, file)
	out, errOut, code := h.update("--yes")
	if code != 0 {
		t.Fatalf("update: exit %d\n%s%s\ndaemon log:\n%s", code, out, errOut, readFile(u.DaemonLog()))
	}
	if got := h.meta().Version; got != smokeGood {
		t.Fatalf("installed version after update %q, want %s", got, smokeGood)
	}
	if after := hostileOwnerSnapshot(t, dir, file); after != before {
		t.Fatalf("update changed root's files through the owner's link:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	h.requireHelperSocketSafe()
	if st, err := os.Lstat(filepath.Join(u.LogDir(), "root-helper.log")); err != nil || st.Mode().Type() != os.ModeSymlink {
		t.Fatalf("the owner's planted link was replaced or followed: %v %v", st, err)
	}
}
