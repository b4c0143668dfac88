package e2e

// Kills during image pull and kernel pull: the owner daemon (built with
// the faultinject tag) is SIGKILLed at each named step, then started
// again. Nothing may remain of the pull (no store row, no staging file or
// directory, no unrecorded image or kernel directory; only layer blobs
// that verified stay in the cache, under their digest), and the same pull
// then succeeds.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/bangerdev/banger/internal/api"
)

// homeFiles lists what BANGER_HOME holds (path, type, size), leaving out
// what a running daemon rightly changes: logs, the runtime directory, the
// lock and SQLite's files (the rows are checked through the daemon).
func homeFiles(t *testing.T, in *instance) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(in.home, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(in.home, p)
		switch {
		case p == in.p.Runtime || p == in.p.LogDir():
			return fs.SkipDir
		case strings.HasPrefix(p, in.p.StoreFile()) || p == in.p.LockFile() || strings.HasPrefix(rel, filepath.Join("state", "backups")):
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		size := info.Size()
		if d.IsDir() {
			size = 0
		}
		out = append(out, fmt.Sprintf("%s %s %d", rel, info.Mode().Type(), size))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Verified caches, each file named by the SHA-256 of its content: layer
// blobs, and the Debian Packages indices.
var (
	cacheDirs = []string{"cache/layers", "cache/layers/sha256", "cache/downloads", "cache/downloads/indices"}
	cacheFile = regexp.MustCompile(`^(cache/layers/sha256/([0-9a-f]{64})|cache/downloads/indices/([0-9a-f]{64})\.Packages) -`)
)

// expectHomeAsBefore fails unless BANGER_HOME holds what it held before,
// with one allowance: the verified caches (layer blobs, package indices),
// each file of which must hash to its name, kept for the next pull.
func expectHomeAsBefore(t *testing.T, in *instance, point string, before []string) {
	t.Helper()
	var extra []string
	for _, f := range homeFiles(t, in) {
		if slices.Contains(before, f) || slices.Contains(cacheDirs, strings.Fields(f)[0]) && strings.Contains(f, " d") {
			continue
		}
		if m := cacheFile.FindStringSubmatch(f); m != nil {
			data, err := os.ReadFile(filepath.Join(in.home, m[1]))
			if err != nil {
				t.Fatal(err)
			}
			if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) == m[2]+m[3] {
				continue
			}
		}
		extra = append(extra, f)
	}
	var gone []string
	after := homeFiles(t, in)
	for _, f := range before {
		if !slices.Contains(after, f) {
			gone = append(gone, f)
		}
	}
	if len(extra)+len(gone) > 0 {
		t.Fatalf("after a kill at %s and a restart BANGER_HOME differs: added %q, gone %q\ndaemon log:\n%s", point, extra, gone, readFile(in.p.DaemonLog()))
	}
}

func (in *instance) imageNames() []string {
	in.t.Helper()
	var l api.ImageList
	if err := json.Unmarshal([]byte(in.ok("banger", "image", "ls", "--json")), &l); err != nil {
		in.t.Fatal(err)
	}
	var names []string
	for _, img := range l.Images {
		names = append(names, img.Name)
	}
	return names
}

func (in *instance) kernelNames() []string {
	in.t.Helper()
	var l api.KernelList
	if err := json.Unmarshal([]byte(in.ok("banger", "kernel", "ls", "--json")), &l); err != nil {
		in.t.Fatal(err)
	}
	var names []string
	for _, k := range l.Kernels {
		names = append(names, k.Name)
	}
	return names
}

// TestFaultKillImagePull: a daemon killed mid-download of a layer, after
// flattening, after the ext4 image is written and between image.json and
// the store row leaves no image and no staging file; the pull then works.
func TestFaultKillImagePull(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	in := newInstance(t)
	faultd := faultDaemon(t)
	// A registry on loopback serving a three-layer image of random
	// (incompressible) files, large enough that a download is caught
	// part-way.
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	img, err := random.Image(3<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	ref := strings.TrimPrefix(srv.URL, "http://") + "/fault/pull:1"
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	in.ok("banger", "daemon", "start")
	for _, step := range faultPoints(t, []string{"layer", "flatten", "image", "record"}, "layer", "flatten", "image", "record") {
		point := "image-pull/" + step
		before := homeFiles(t, in)
		imgName := "p-" + step
		out := faultKillAt(t, in, faultd, point, "image", "pull", "--insecure", "--name", imgName, ref)
		if !strings.Contains(out, "connection closed before a result") {
			t.Fatalf("%s: the client did not report the lost daemon: %q", point, out)
		}
		if names := in.imageNames(); slices.Contains(names, imgName) {
			t.Fatalf("%s: image %q is listed after recovery: %v", point, imgName, names)
		}
		expectHomeAsBefore(t, in, point, before)
		// The same pull works after the crash, and removing it leaves the
		// home as it was (cached blobs aside).
		in.ok("banger", "image", "pull", "--insecure", "--name", imgName, ref)
		if names := in.imageNames(); !slices.Contains(names, imgName) {
			t.Fatalf("%s: the retried pull is not listed: %v", point, names)
		}
		in.ok("banger", "image", "rm", imgName)
		expectHomeAsBefore(t, in, point+" (pull again, rm)", before)
	}
}

// TestFaultKillKernelPull: a daemon killed mid-download of the kernel
// package (and, under BANGER_FAULT_ALL, with the kernel staged but not
// installed, and installed but not recorded) leaves no kernel and no
// staging directory; the pull then works. Each pull fetches the package
// from the Debian archive (about 26 MB), so make test walks one point.
func TestFaultKillKernelPull(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	in := newInstance(t)
	faultd := faultDaemon(t)
	in.ok("banger", "daemon", "start")
	for _, step := range faultPoints(t, []string{"fetch", "staged", "record"}, "fetch") {
		point := "kernel-pull/" + step
		before := homeFiles(t, in)
		out := faultKillAt(t, in, faultd, point, "kernel", "pull")
		if !strings.Contains(out, "connection closed before a result") {
			t.Fatalf("%s: the client did not report the lost daemon: %q", point, out)
		}
		if names := in.kernelNames(); len(names) != 0 {
			t.Fatalf("%s: kernels listed after recovery: %v", point, names)
		}
		expectHomeAsBefore(t, in, point, before)
		// A pull fetches 26 MB and checks the kernel: more than ok's minute
		// on a loaded machine.
		okWithin(t, in, 10*time.Minute, "kernel", "pull")
		if names := in.kernelNames(); len(names) != 1 {
			t.Fatalf("%s: after the retried pull kernels are %v", point, names)
		}
		in.ok("banger", "kernel", "rm", in.kernelNames()[0])
		expectHomeAsBefore(t, in, point+" (pull again, rm)", before)
	}
}

// okWithin runs banger args, which must succeed within d.
func okWithin(t *testing.T, in *instance, d time.Duration, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "banger"), args...)
	cmd.Env = in.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("banger %s: %v\n%s\ndaemon log:\n%s", strings.Join(args, " "), err, out, readFile(in.p.DaemonLog()))
	}
}
