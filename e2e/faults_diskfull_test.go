package e2e

// Disk full: BANGER_HOME on a small tmpfs, mounted in the test's own mount
// namespace (the test re-executes itself under unshare -m). An image pull
// that does not fit fails with an error saying so and what to do, leaves
// no image, no staging file and a sound store, and the same pull works
// once there is room.

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/testutil"
)

func TestFaultDiskFullImagePull(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	testutil.RequireRoot(t)
	if !suspendInMountNS(t) {
		return
	}
	home := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=20m,mode=0755", "banger-full", home).CombinedOutput(); err != nil {
		t.Fatalf("mount a 20 MiB tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", home).Run() })
	in := newInstanceFromHome(t, home)
	t.Cleanup(in.cleanup)

	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	img, err := random.Image(6<<20, 3) // 18 MiB of incompressible layers, twice over once flattened
	if err != nil {
		t.Fatal(err)
	}
	ref := strings.TrimPrefix(srv.URL, "http://") + "/full/pull:1"
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	in.ok("banger", "daemon", "start")
	before := homeFiles(t, in)

	out, errOut, code := in.run("banger", "image", "pull", "--insecure", "--name", "big", ref)
	if code == 0 {
		t.Fatalf("a pull larger than the file system succeeded: %s", out)
	}
	for _, want := range []string{"no space left on the file system holding " + in.p.Data, "while pulling image", "free space there, or move BANGER_HOME"} {
		if !strings.Contains(errOut, want) {
			t.Fatalf("the disk-full error does not say %q:\n%s", want, errOut)
		}
	}
	t.Logf("disk full: %s", strings.TrimSpace(errOut))
	if names := in.imageNames(); slices.Contains(names, "big") {
		t.Fatalf("the failed pull is listed: %v", names)
	}
	expectHomeAsBefore(t, in, "a disk-full pull", before)

	// The store is sound, read back by the daemon and by Check.
	in.ok("banger", "daemon", "stop")
	res, err := store.Check(context.Background(), in.p.StoreFile())
	if err != nil || !res.WouldSucceed {
		t.Fatalf("the store after a disk-full pull: %+v, %v", res, err)
	}

	// Room made: the same pull works.
	if out, err := exec.Command("mount", "-o", "remount,size=200m", home).CombinedOutput(); err != nil {
		t.Fatalf("grow the tmpfs: %v %s", err, out)
	}
	in.ok("banger", "image", "pull", "--insecure", "--name", "big", ref)
	if names := in.imageNames(); !slices.Contains(names, "big") {
		t.Fatalf("after freeing space the pull is not listed: %v", names)
	}
}
