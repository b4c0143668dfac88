package roothelper_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/imagecat"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
)

// ownerHome makes a BANGER_HOME owned by the owner uid, in a directory the
// owner can reach, and points this process (and so the in-process helper)
// at it.
func ownerHome(t *testing.T, uid, gid int) string {
	t.Helper()
	home, err := os.MkdirTemp("", "banger-imagebuild-home-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	if err := os.Chmod(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, uid, gid); err != nil {
		t.Fatal(err)
	}
	t.Setenv(paths.EnvHome, home)
	return home
}

// workDirs lists the helper's build work dirs in the temp dir.
func workDirs(t *testing.T) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(os.TempDir(), "banger-image-build-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestImageBuildRefusesBadRequests(t *testing.T) {
	testutil.RequireRoot(t)
	home := ownerHome(t, ownerUID, ownerUID)
	c, sock, _ := startHelper(t, ownerUID)
	before := workDirs(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	for _, tc := range []struct{ name, code string }{
		{"no-such-image", api.CodeNotFound},
		{"alpine", api.CodeInvalidArgument},       // an OCI entry: pulled, never built
		{"ubuntu-noble", api.CodeInvalidArgument}, // the same
		{"../debian-bookworm", api.CodeInvalidArgument},
		{"debian-bookworm/../../etc", api.CodeInvalidArgument},
		{"/etc", api.CodeInvalidArgument},
		{"", api.CodeInvalidArgument},
		{"debian-bookworm\x00", api.CodeInvalidArgument},
	} {
		var got error
		if err := asUser(t, ownerUID, ownerUID, func() error {
			_, got = c.BuildImage(ctx, tc.name, nil)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		wantCode(t, "owner builds "+strconv.Quote(tc.name), got, tc.code)
		_, got = c.BuildImage(ctx, tc.name, nil)
		wantCode(t, "root builds "+strconv.Quote(tc.name), got, tc.code)
	}

	// The helper picks the output path: a request naming one is refused
	// whole, not half-understood.
	for _, params := range []any{
		map[string]string{"name": "debian-bookworm", "path": "/etc/passwd"},
		map[string]string{"name": "debian-bookworm", "out": "/root/x.ext4"},
		map[string]any{"name": "debian-bookworm", "owner_uid": 0},
	} {
		err := rpc.NewClient(sock).CallRaw(ctx, api.MethodHelperImageBuild.Name, params, nil)
		wantCode(t, "params with extra fields", err, api.CodeInvalidArgument)
	}

	// A uid that is neither root nor the owner is turned away.
	var stray error
	if err := asUser(t, strayUID, strayUID, func() error {
		_, stray = c.BuildImage(ctx, "debian-bookworm", nil)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "stray uid builds", stray, api.CodePermissionDenied)

	// Nothing was written: no store, no work dir.
	if ents, err := os.ReadDir(home); err != nil || len(ents) != 0 {
		t.Errorf("BANGER_HOME after refused builds: %v entries, err %v; want it empty", len(ents), err)
	}
	if after := workDirs(t); !slices.Equal(before, after) {
		t.Errorf("work dirs after refused builds: %v, before: %v", after, before)
	}
}

// asUserWithin is asUser with a deadline long enough for a real build.
func asUserWithin(t *testing.T, d time.Duration, uid, gid int, fn func() error) error {
	t.Helper()
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)); e != 0 {
			ch <- errors.New("setresgid: " + e.Error())
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
			ch <- errors.New("setresuid: " + e.Error())
			return
		}
		ch <- fn()
	}()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		t.Fatalf("call as uid %d did not return within %s", uid, d)
		return nil
	}
}

// TestImageBuildAsOwner builds debian-bookworm for an unprivileged owner
// through the helper: debootstrap from Debian's archive, about a minute.
func TestImageBuildAsOwner(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "debootstrap")
	testutil.RequireBinary(t, "e2fsck")
	const name = "debian-bookworm"
	wantGID := ownerUID // the owner has no passwd entry: the caller's gid
	if u, err := user.LookupId(strconv.Itoa(ownerUID)); err == nil {
		wantGID, _ = strconv.Atoi(u.Gid)
	}
	home := ownerHome(t, ownerUID, ownerUID)
	layout := testutil.UserPaths(t, home)
	store := imagecat.Store{Dir: layout.ImagesDir()}
	c, _, logs := startHelper(t, ownerUID)
	before := workDirs(t)

	var (
		mu     sync.Mutex
		stages = map[string]int{}
	)
	onEvent := func(ev progress.Event) {
		mu.Lock()
		defer mu.Unlock()
		stages[ev.Stage]++
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var res api.HelperImageBuilt
	start := time.Now()
	if err := asUserWithin(t, 11*time.Minute, ownerUID, ownerUID, func() error {
		var err error
		res, err = c.BuildImage(ctx, name, onEvent)
		return err
	}); err != nil {
		for _, l := range logs.Records(t) {
			t.Logf("helper: %v", l)
		}
		t.Fatalf("build %s as owner uid %d: %v", name, ownerUID, err)
	}
	t.Logf("built %s in %s: %d bytes, %s", name, time.Since(start).Round(time.Second), res.SizeBytes, res.Digest)

	want := store.RootfsPath(name)
	if res.Name != name || res.Path != want {
		t.Errorf("result names %q at %s, want %q at %s", res.Name, res.Path, name, want)
	}
	if !strings.HasPrefix(res.Source, "debootstrap:bookworm@") || res.CreatedAt.Before(start) {
		t.Errorf("result source %q, created %s (build started %s)", res.Source, res.CreatedAt, start)
	}
	mu.Lock()
	for _, s := range []string{imagecat.StageDebootstrap, imagecat.StageMkfs, "install"} {
		if stages[s] == 0 {
			t.Errorf("no progress events of stage %q (got %v)", s, stages)
		}
	}
	mu.Unlock()

	// The rootfs, its directory and the images dir are the owner's.
	for _, p := range []string{layout.ImagesDir(), filepath.Dir(want), want} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if int(st.Uid) != ownerUID || int(st.Gid) != wantGID {
			t.Errorf("%s is owned by %d:%d, want %d:%d", p, st.Uid, st.Gid, ownerUID, wantGID)
		}
		if p == want && (!fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 || fi.Size() != res.SizeBytes) {
			t.Errorf("%s: mode %v, size %d; want a 0644 regular file of %d bytes", p, fi.Mode(), fi.Size(), res.SizeBytes)
		}
	}
	// Only the rootfs is in the image's directory: no temp file left, and
	// image.json is the daemon's to write.
	if ents, err := os.ReadDir(filepath.Dir(want)); err != nil || len(ents) != 1 {
		t.Errorf("image dir holds %v (err %v), want only %s", ents, err, filepath.Base(want))
	}

	// The copy in the store is the image the helper hashed.
	f, err := os.Open(want)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != res.Digest {
		t.Errorf("store copy hashes to %s, the helper reported %s", got, res.Digest)
	}
	if out, err := exec.Command("e2fsck", "-n", "-f", want).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -n -f %s: %v\n%s", want, err, out)
	}
	if after := workDirs(t); !slices.Equal(before, after) {
		t.Errorf("work dirs after the build: %v, before: %v", after, before)
	}
}
