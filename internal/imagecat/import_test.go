package imagecat

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
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/bangerdev/banger/internal/ext4"
	"github.com/bangerdev/banger/internal/flatten"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/testutil"
)

func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func requireE2fsprogs(t *testing.T) {
	t.Helper()
	for _, b := range []string{"mkfs.ext4", "debugfs", "e2fsck"} {
		testutil.RequireBinary(t, b)
	}
}

type tarEntry struct {
	hdr  tar.Header
	body string
}

func makeTar(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if e.body != "" {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func rootfsTar(t *testing.T) []byte {
	return makeTar(t, []tarEntry{
		{hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "etc/os-release", Typeflag: tar.TypeReg}, body: "ID=test\n"},
		{hdr: tar.Header{Name: "etc/shadow", Typeflag: tar.TypeReg, Mode: 0o640, Gid: 42}, body: "root:*:1::::::\n"},
		{hdr: tar.Header{Name: "home/alice/", Typeflag: tar.TypeDir, Mode: 0o700, Uid: 1234, Gid: 1234}},
		{hdr: tar.Header{Name: "home/alice/notes", Typeflag: tar.TypeReg, Uid: 1234, Gid: 1234}, body: "hi"},
		{hdr: tar.Header{Name: "bin/sh", Typeflag: tar.TypeReg, Mode: 0o755}, body: "#!fake"},
		{hdr: tar.Header{Name: "usr/bin/sh", Typeflag: tar.TypeLink, Linkname: "bin/sh"}},
		{hdr: tar.Header{Name: "etc/localtime", Typeflag: tar.TypeSymlink, Linkname: "/usr/share/zoneinfo/UTC"}},
		{hdr: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}},
	})
}

// assertNoLeftovers checks dir holds exactly want (base names).
func assertDirHolds(t *testing.T, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%s holds %q, want %q", dir, got, want)
	}
}

func checkResult(t *testing.T, res Result, name, out, sourcePrefix string) {
	t.Helper()
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if res.Name != name || res.Path != out || res.SizeBytes != int64(len(data)) ||
		res.Digest != "sha256:"+hex.EncodeToString(sum[:]) || !strings.HasPrefix(res.Source, sourcePrefix) ||
		time.Since(res.CreatedAt) > time.Hour {
		t.Fatalf("result %+v does not describe %s (size %d)", res, out, len(data))
	}
	if err := CheckExt4(context.Background(), out); err != nil {
		t.Fatal(err)
	}
}

func TestImportDirectory(t *testing.T) {
	requireE2fsprogs(t)
	ctx := testCtx(t, 2*time.Minute)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "etc/os-release"), "ID=dir\n")
	if err := os.Symlink("os-release", filepath.Join(src, "etc/alias")); err != nil {
		t.Fatal(err)
	}
	outDir := t.TempDir()
	out := filepath.Join(outDir, "rootfs.ext4")
	var stages []string
	res, err := Import(ctx, "mydir", src, out, ImportOptions{Progress: func(e progress.Event) { stages = append(stages, e.Stage) }})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, "mydir", out, "import:dir:"+src)
	if b, err := ext4.ReadFile(ctx, out, "/etc/os-release"); err != nil || string(b) != "ID=dir\n" {
		t.Fatalf("os-release in image: %q %v", b, err)
	}
	if in, err := ext4.Stat(ctx, out, "/etc/alias"); err != nil || in.Type != "symlink" || in.LinkTarget != "os-release" {
		t.Fatalf("symlink in image: %+v %v", in, err)
	}
	if !strings.Contains(strings.Join(stages, ","), StageMkfs) {
		t.Fatalf("progress stages %v lack %s", stages, StageMkfs)
	}
	assertDirHolds(t, outDir, "rootfs.ext4")
}

func TestImportTarCompressed(t *testing.T) {
	requireE2fsprogs(t)
	plain := rootfsTar(t)
	var gz, zs bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(plain)
	gw.Close()
	zw, err := zstd.NewWriter(&zs)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(plain)
	zw.Close()
	for name, data := range map[string][]byte{"plain": plain, "gzip": gz.Bytes(), "zstd": zs.Bytes()} {
		t.Run(name, func(t *testing.T) {
			ctx := testCtx(t, 2*time.Minute)
			dir := t.TempDir()
			src := filepath.Join(dir, "rootfs.tar")
			if err := os.WriteFile(src, data, 0o644); err != nil {
				t.Fatal(err)
			}
			work, outDir := t.TempDir(), t.TempDir()
			out := filepath.Join(outDir, "rootfs.ext4")
			res, err := Import(ctx, "t-"+name, src, out, ImportOptions{WorkDir: work})
			if err != nil {
				t.Fatal(err)
			}
			checkResult(t, res, "t-"+name, out, "import:tar:")
			if b, err := ext4.ReadFile(ctx, out, "/etc/os-release"); err != nil || string(b) != "ID=test\n" {
				t.Fatalf("os-release: %q %v", b, err)
			}
			// Ownership and modes come from the tar, root or not.
			if in, err := ext4.Stat(ctx, out, "/home/alice/notes"); err != nil || in.UID != 1234 || in.GID != 1234 {
				t.Fatalf("alice's file: %+v %v", in, err)
			}
			if in, err := ext4.Stat(ctx, out, "/etc/shadow"); err != nil || in.UID != 0 || in.GID != 42 || in.Mode&0o777 != 0o640 {
				t.Fatalf("shadow: %+v %v", in, err)
			}
			if in, err := ext4.Stat(ctx, out, "/usr/bin/sh"); err != nil || in.Links != 2 {
				t.Fatalf("hardlink: %+v %v", in, err)
			}
			if in, err := ext4.Stat(ctx, out, "/dev/null"); err != nil || in.Type != "character special" {
				t.Fatalf("device node: %+v %v", in, err)
			}
			assertDirHolds(t, work)
			assertDirHolds(t, outDir, "rootfs.ext4")
		})
	}
}

func TestImportHostileTarRefused(t *testing.T) {
	requireE2fsprogs(t)
	cases := map[string][]tarEntry{
		"dotdot": {
			{hdr: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}},
			{hdr: tar.Header{Name: "../sentinel", Typeflag: tar.TypeReg}, body: "owned"},
		},
		"through symlink": {
			{hdr: tar.Header{Name: "escape", Typeflag: tar.TypeSymlink, Linkname: "../.."}},
			{hdr: tar.Header{Name: "escape/sentinel", Typeflag: tar.TypeReg}, body: "owned"},
		},
		"hardlink out": {
			{hdr: tar.Header{Name: "x", Typeflag: tar.TypeLink, Linkname: "../sentinel"}},
		},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			ctx := testCtx(t, time.Minute)
			base := t.TempDir()
			// work/banger-import-*/rootfs is the root: ../.. from it is work/.
			work := filepath.Join(base, "work")
			outDir := filepath.Join(base, "out")
			for _, d := range []string{work, outDir} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			sentinels := []string{filepath.Join(base, "sentinel"), filepath.Join(work, "sentinel")}
			for _, s := range sentinels[:1] {
				writeFile(t, s, "original")
			}
			src := filepath.Join(base, "evil.tar")
			if err := os.WriteFile(src, makeTar(t, entries), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Import(ctx, "evil", src, filepath.Join(outDir, "rootfs.ext4"), ImportOptions{WorkDir: work})
			if !errors.Is(err, flatten.ErrUnsafePath) {
				t.Fatalf("hostile tar: %v, want ErrUnsafePath", err)
			}
			if b, _ := os.ReadFile(sentinels[0]); string(b) != "original" {
				t.Fatalf("sentinel outside changed: %q", b)
			}
			if _, err := os.Lstat(sentinels[1]); !os.IsNotExist(err) {
				t.Fatalf("a file was written into the work dir's parent: %v", err)
			}
			assertDirHolds(t, work)
			assertDirHolds(t, outDir)
		})
	}
}

func TestImportExt4File(t *testing.T) {
	requireE2fsprogs(t)
	ctx := testCtx(t, 2*time.Minute)
	tree := t.TempDir()
	writeFile(t, filepath.Join(tree, "etc/os-release"), "ID=ext4\n")
	src := filepath.Join(t.TempDir(), "src.ext4")
	if _, err := ext4.Make(ctx, tree, src, ext4.Options{}); err != nil {
		t.Fatal(err)
	}
	outDir := t.TempDir()
	out := filepath.Join(outDir, "rootfs.ext4")
	res, err := Import(ctx, "copied", src, out, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, "copied", out, "import:ext4:")
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(out)
	if !bytes.Equal(a, b) {
		t.Fatal("imported ext4 differs from its source")
	}
	// The copy stays sparse: far fewer blocks allocated than its size.
	var st syscall.Stat_t
	if err := syscall.Stat(out, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 >= st.Size/2 {
		t.Fatalf("copy is not sparse: %d bytes allocated of %d", st.Blocks*512, st.Size)
	}
	if got, err := ext4.ReadFile(ctx, out, "/etc/os-release"); err != nil || string(got) != "ID=ext4\n" {
		t.Fatalf("os-release: %q %v", got, err)
	}
}

func TestImportRefusesCorruptExt4AndJunk(t *testing.T) {
	requireE2fsprogs(t)
	ctx := testCtx(t, 2*time.Minute)
	tree := t.TempDir()
	for i := range 50 {
		writeFile(t, filepath.Join(tree, "d", strings.Repeat("f", i+1)), strings.Repeat("x", 5000))
	}
	src := filepath.Join(t.TempDir(), "bad.ext4")
	if _, err := ext4.Make(ctx, tree, src, ext4.Options{}); err != nil {
		t.Fatal(err)
	}
	// Zero the group descriptors (block 1 with 4 KiB blocks) and the root
	// directory's inode table region, keeping the superblock magic.
	f, err := os.OpenFile(src, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 4096), 4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if ok, _ := hasExt4Magic(src); !ok {
		t.Fatal("corruption removed the magic; the test would not reach e2fsck")
	}
	outDir := t.TempDir()
	_, err = Import(ctx, "bad", src, filepath.Join(outDir, "rootfs.ext4"), ImportOptions{})
	if !errors.Is(err, ErrCorruptImage) {
		t.Fatalf("corrupt ext4: %v, want ErrCorruptImage", err)
	}
	assertDirHolds(t, outDir)

	junk := filepath.Join(t.TempDir(), "junk.bin")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("not an image "), 500), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Import(ctx, "junk", junk, filepath.Join(outDir, "rootfs.ext4"), ImportOptions{}); !errors.Is(err, ErrBadSource) {
		t.Fatalf("junk: %v, want ErrBadSource", err)
	}
	assertDirHolds(t, outDir)
}
