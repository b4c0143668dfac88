package imagepull

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/bangerdev/banger/internal/ext4"
	"github.com/bangerdev/banger/internal/flatten"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/testutil"
)

var capV2 = string([]byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})

func requireTools(t testing.TB) {
	t.Helper()
	for _, b := range []string{"mkfs.ext4", "debugfs", "e2fsck"} {
		testutil.RequireBinary(t, b)
	}
}

// semanticImage is three layers with whiteouts, an opaque directory,
// links, special modes, ownership, an xattr and a device node.
func semanticImage(t testing.TB) v1.Image {
	l1 := tarBytes(t,
		ent{name: "etc/", typ: tar.TypeDir},
		ent{name: "etc/passwd", body: "root:x:0:0\n"},
		ent{name: "etc/gone", body: "lower"},
		ent{name: "usr/", typ: tar.TypeDir},
		ent{name: "usr/lib/", typ: tar.TypeDir},
		ent{name: "usr/lib/x86_64-linux-gnu/", typ: tar.TypeDir},
		ent{name: "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", body: "ELF", mode: 0o755},
		ent{name: "lib", typ: tar.TypeSymlink, link: "usr/lib"},
		ent{name: "opt/", typ: tar.TypeDir},
		ent{name: "opt/lower", body: "lower"},
		ent{name: "opt/sub/", typ: tar.TypeDir},
		ent{name: "opt/sub/deep", body: "lower"},
	)
	l2 := tarBytes(t,
		ent{name: "etc/.wh.gone"},
		ent{name: "opt/", typ: tar.TypeDir},
		ent{name: "opt/.wh..wh..opq"},
		ent{name: "opt/upper", body: "upper"},
		ent{name: "bin/", typ: tar.TypeDir},
		ent{name: "bin/su", body: "su", mode: 0o4755},
		ent{name: "bin/ping", body: "ping", mode: 0o755, xattrs: map[string]string{"security.capability": capV2, "user.origin": "test"}},
		ent{name: "bin/ping6", typ: tar.TypeLink, link: "bin/ping"},
		ent{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
		ent{name: "home/", typ: tar.TypeDir},
		ent{name: "home/dev/", typ: tar.TypeDir, mode: 0o750, uid: 1000, gid: 2000},
		ent{name: "home/dev/notes", body: "mine", mode: 0o640, uid: 1000, gid: 2000},
		ent{name: "lib64/", typ: tar.TypeDir},
		ent{name: "lib64/ld-linux-x86-64.so.2", typ: tar.TypeSymlink, link: "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"},
		ent{name: "etc/mtab", typ: tar.TypeSymlink, link: "/proc/self/mounts"},
		ent{name: "dev/", typ: tar.TypeDir},
		ent{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
	)
	l3 := tarBytes(t,
		ent{name: "etc/passwd", body: "root:x:0:0\ndev:x:1000:2000\n"},
	)
	return image(t, "linux/amd64", gzLayer(t, l1), gzLayer(t, l2), gzLayer(t, l3))
}

func checkSemanticImage(t *testing.T, img string) {
	t.Helper()
	ctx := context.Background()
	file := func(p, want string) {
		t.Helper()
		if b, err := ext4.ReadFile(ctx, img, p); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", p, b, err, want)
		}
	}
	absent := func(p string) {
		t.Helper()
		if _, err := ext4.Stat(ctx, img, p); err == nil {
			t.Errorf("%s should be gone", p)
		}
	}
	stat := func(p string) *ext4.Inode {
		t.Helper()
		in, err := ext4.Stat(ctx, img, p)
		if err != nil {
			t.Fatalf("stat %s: %v", p, err)
		}
		return in
	}
	file("/etc/passwd", "root:x:0:0\ndev:x:1000:2000\n")
	file("/opt/upper", "upper")
	absent("/etc/gone")
	absent("/opt/lower")
	absent("/opt/sub")
	if in := stat("/bin/su"); in.Mode != 0o4755 || in.UID != 0 {
		t.Errorf("/bin/su = %+v", in)
	}
	if in := stat("/tmp"); in.Mode != 0o1777 {
		t.Errorf("/tmp mode %o", in.Mode)
	}
	if in := stat("/home/dev"); in.UID != 1000 || in.GID != 2000 || in.Mode != 0o750 {
		t.Errorf("/home/dev = %+v", in)
	}
	if in := stat("/home/dev/notes"); in.UID != 1000 || in.GID != 2000 || in.Mode != 0o640 {
		t.Errorf("/home/dev/notes = %+v", in)
	}
	ping, ping6 := stat("/bin/ping"), stat("/bin/ping6")
	if ping.Ino != ping6.Ino || ping.Links != 2 {
		t.Errorf("hardlink: %+v %+v", ping, ping6)
	}
	if v, err := ext4.Xattr(ctx, img, "/bin/ping", "security.capability"); err != nil || string(v) != capV2 {
		t.Errorf("security.capability = %x, %v", v, err)
	}
	if v, err := ext4.Xattr(ctx, img, "/bin/ping", "user.origin"); err != nil || string(v) != "test" {
		t.Errorf("user.origin = %q, %v", v, err)
	}
	for p, want := range map[string]string{"/lib": "usr/lib", "/etc/mtab": "/proc/self/mounts",
		"/lib64/ld-linux-x86-64.so.2": "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"} {
		if in := stat(p); in.Type != "symlink" || in.LinkTarget != want {
			t.Errorf("%s = %+v, want symlink to %q", p, in, want)
		}
	}
	if in := stat("/dev/null"); in.Type != "character special" || in.Mode != 0o666 {
		t.Errorf("/dev/null = %+v", in)
	}
}

func TestPullSemantics(t *testing.T) {
	requireTools(t)
	reg := startRegistry(t)
	ref := reg.push(t, "test/semantic:v1", semanticImage(t))
	modes := map[string]bool{"record ownership (rootless)": true}
	if os.Geteuid() == 0 {
		modes["chown directly (root)"] = false
	}
	for mode, record := range modes {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			dest := filepath.Join(dir, "rootfs.ext4")
			var mu sync.Mutex
			stages := map[string]int{}
			res, err := Pull(context.Background(), ref, dest, Options{
				LayersDir: filepath.Join(dir, "layers"), Insecure: true, RecordOwnership: record,
				Progress: func(ev progress.Event) {
					mu.Lock()
					defer mu.Unlock()
					stages[strings.Fields(ev.Stage)[0]]++
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			checkSemanticImage(t, dest)
			if len(res.Layers) != 3 || !strings.HasPrefix(res.Digest, "sha256:") || res.Path != dest || res.Platform != "linux/amd64" {
				t.Errorf("result = %+v", res)
			}
			b, _ := os.ReadFile(dest)
			if sum := sha256.Sum256(b); res.ImageDigest != "sha256:"+hex.EncodeToString(sum[:]) || res.SizeBytes != int64(len(b)) {
				t.Errorf("image digest %s size %d do not match the file (%d bytes)", res.ImageDigest, res.SizeBytes, len(b))
			}
			if len(res.Config.Cmd) != 1 || res.Config.Cmd[0] != "/bin/sh" {
				t.Errorf("config = %+v", res.Config)
			}
			for _, s := range []string{"resolve", "layer", "pull", "flatten", "mkfs", "done"} {
				if stages[s] == 0 {
					t.Errorf("no %q progress event (got %v)", s, stages)
				}
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != 2 {
				t.Errorf("work dir holds %d entries, want the image and the layer cache", len(ents))
			}
		})
	}
}

func TestPullReusesLayerCache(t *testing.T) {
	requireTools(t)
	reg := startRegistry(t)
	base := gzLayer(t, tarBytes(t, ent{name: "base", body: "shared"}))
	img1 := image(t, "linux/amd64", base, gzLayer(t, tarBytes(t, ent{name: "one", body: "1"})))
	img2 := image(t, "linux/amd64", base, gzLayer(t, tarBytes(t, ent{name: "two", body: "2"})))
	ref1, ref2 := reg.push(t, "test/one:v1", img1), reg.push(t, "test/two:v1", img2)
	before := reg.blobGets(layerDigest(t, base))

	dir := t.TempDir()
	opts := Options{LayersDir: filepath.Join(dir, "layers"), Insecure: true}
	ctx := context.Background()
	for i, ref := range []string{ref1, ref1, ref2} {
		if _, err := Pull(ctx, ref, filepath.Join(dir, "img.ext4"), opts); err != nil {
			t.Fatalf("pull %d: %v", i, err)
		}
	}
	if got := reg.blobGets(layerDigest(t, base)) - before; got != 1 {
		t.Errorf("shared layer downloaded %d times over three pulls, want 1", got)
	}
	if b, err := ext4.ReadFile(ctx, filepath.Join(dir, "img.ext4"), "/two"); err != nil || string(b) != "2" {
		t.Errorf("/two = %q, %v", b, err)
	}
	cached, _ := os.ReadDir(filepath.Join(dir, "layers", "sha256"))
	if len(cached) != 3 {
		t.Errorf("cache holds %d blobs, want 3", len(cached))
	}
}

func TestPullSelectsPlatform(t *testing.T) {
	requireTools(t)
	reg := startRegistry(t)
	amd := image(t, "linux/amd64", gzLayer(t, tarBytes(t, ent{name: "arch", body: "amd64"})))
	arm := image(t, "linux/arm64", gzLayer(t, tarBytes(t, ent{name: "arch", body: "arm64"})))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	ref := reg.pushIndex(t, "test/multi:v1", idx)
	armDigest, _ := arm.Digest()
	dir := t.TempDir()
	ctx := context.Background()
	for platform, want := range map[string]string{"": "amd64", "linux/arm64": "arm64", "linux/amd64": "amd64"} {
		dest := filepath.Join(dir, "img-"+want+".ext4")
		res, err := Pull(ctx, ref, dest, Options{LayersDir: filepath.Join(dir, "layers"), Insecure: true, Platform: platform})
		if err != nil {
			t.Fatalf("platform %q: %v", platform, err)
		}
		if b, err := ext4.ReadFile(ctx, dest, "/arch"); err != nil || string(b) != want {
			t.Errorf("platform %q: /arch = %q, %v", platform, b, err)
		}
		if platform == "linux/arm64" && res.Digest != armDigest.String() {
			t.Errorf("digest %s, want the arm64 manifest %s", res.Digest, armDigest)
		}
	}
	if _, err := Pull(ctx, ref, filepath.Join(dir, "none.ext4"), Options{LayersDir: filepath.Join(dir, "layers"), Insecure: true, Platform: "linux/s390x"}); err == nil {
		t.Error("pulling a platform the index lacks should fail")
	}
}

func TestPullRejectsCorruptBlob(t *testing.T) {
	requireTools(t)
	reg := startRegistry(t)
	bad := gzLayer(t, tarBytes(t, ent{name: "f", body: strings.Repeat("data", 4096)}))
	ref := reg.push(t, "test/corrupt:v1", image(t, "linux/amd64", bad))
	reg.mu.Lock()
	reg.corrupt[layerDigest(t, bad)] = true
	reg.mu.Unlock()

	dir := t.TempDir()
	dest := filepath.Join(dir, "img.ext4")
	_, err := Pull(context.Background(), ref, dest, Options{LayersDir: filepath.Join(dir, "layers"), Insecure: true})
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("err = %v, want ErrDigestMismatch", err)
	}
	if _, err := os.Stat(dest); !errors.Is(err, os.ErrNotExist) {
		t.Error("a failed pull left an image")
	}
	cached, _ := os.ReadDir(filepath.Join(dir, "layers", "sha256"))
	if len(cached) != 0 {
		t.Errorf("a corrupt blob entered the cache: %v", cached)
	}
}

func TestPullRejectsCorruptCache(t *testing.T) {
	requireTools(t)
	reg := startRegistry(t)
	l := gzLayer(t, tarBytes(t, ent{name: "f", body: "good"}))
	ref := reg.push(t, "test/cache:v1", image(t, "linux/amd64", l))
	dir := t.TempDir()
	opts := Options{LayersDir: filepath.Join(dir, "layers"), Insecure: true}
	dest := filepath.Join(dir, "img.ext4")
	ctx := context.Background()
	if _, err := Pull(ctx, ref, dest, opts); err != nil {
		t.Fatal(err)
	}
	os.Remove(dest)
	blob := filepath.Join(dir, "layers", "sha256", strings.TrimPrefix(layerDigest(t, l), "sha256:"))
	b, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	// Swap in another valid gzip tar: decodes fine, hashes wrong.
	evil := gzLayer(t, tarBytes(t, ent{name: "f", body: "evil"}))
	rc, _ := evil.Compressed()
	var eb bytes.Buffer
	eb.ReadFrom(rc)
	if bytes.Equal(b, eb.Bytes()) {
		t.Fatal("test layers should differ")
	}
	if err := os.WriteFile(blob, eb.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Pull(ctx, ref, dest, opts); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("err = %v, want ErrDigestMismatch", err)
	}
	if _, err := os.Stat(dest); !errors.Is(err, os.ErrNotExist) {
		t.Error("a failed pull left an image")
	}
	if _, err := os.Stat(blob); !errors.Is(err, os.ErrNotExist) {
		t.Error("the corrupt cache entry should be removed")
	}
	if _, err := Pull(ctx, ref, dest, opts); err != nil {
		t.Fatalf("pull after the bad entry was dropped: %v", err)
	}
	if got, err := ext4.ReadFile(ctx, dest, "/f"); err != nil || string(got) != "good" {
		t.Errorf("/f = %q, %v", got, err)
	}
}

func TestPullRejectsHostileLayer(t *testing.T) {
	requireTools(t)
	reg := startRegistry(t)
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	os.MkdirAll(outside, 0o755)
	sentinel := filepath.Join(outside, "sentinel")
	os.WriteFile(sentinel, []byte("untouched"), 0o644)
	ref := reg.push(t, "test/hostile:v1", image(t, "linux/amd64",
		gzLayer(t, tarBytes(t, ent{name: "escape", typ: tar.TypeSymlink, link: outside})),
		gzLayer(t, tarBytes(t, ent{name: "escape/sentinel", body: "pwned"})),
	))
	dest := filepath.Join(base, "img.ext4")
	_, err := Pull(context.Background(), ref, dest, Options{LayersDir: filepath.Join(base, "layers"), Insecure: true})
	if !errors.Is(err, flatten.ErrUnsafePath) {
		t.Fatalf("err = %v, want flatten.ErrUnsafePath", err)
	}
	if b, _ := os.ReadFile(sentinel); string(b) != "untouched" {
		t.Fatalf("sentinel = %q", b)
	}
	ents, _ := os.ReadDir(base)
	for _, e := range ents {
		if e.Name() != "outside" && e.Name() != "layers" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestPullRejectsOversizedLayer(t *testing.T) {
	reg := startRegistry(t)
	ref := reg.push(t, "test/big:v1", image(t, "linux/amd64", gzLayer(t, tarBytes(t, ent{name: "f", body: strings.Repeat("x", 1<<16)}))))
	dir := t.TempDir()
	_, err := Pull(context.Background(), ref, filepath.Join(dir, "img.ext4"), Options{LayersDir: filepath.Join(dir, "layers"), Insecure: true, MaxLayerSize: 100})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
}
