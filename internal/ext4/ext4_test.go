package ext4

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/testutil"
)

func requireE2fsprogs(t *testing.T) {
	t.Helper()
	for _, b := range []string{"mkfs.ext4", "debugfs", "e2fsck", "resize2fs", "dumpe2fs"} {
		testutil.RequireBinary(t, b)
	}
}

func write(t *testing.T, p, body string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(p, uint32(mode)); err != nil {
		t.Fatal(err)
	}
}

// fsck fails the test unless e2fsck finds image clean.
func fsck(t *testing.T, image string) {
	t.Helper()
	if out, err := exec.Command("e2fsck", "-fn", image).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
}

func noLeftovers(t *testing.T, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("%s holds %v, want %v", dir, names, want)
	}
}

func TestMakeCopiesTree(t *testing.T) {
	requireE2fsprogs(t)
	ctx := context.Background()
	src := t.TempDir()
	write(t, filepath.Join(src, "etc/hostname"), "banger\n", 0o644)
	write(t, filepath.Join(src, "bin/su"), "su", 0o4755)
	write(t, filepath.Join(src, "big"), strings.Repeat("0123456789", 300000), 0o600)
	if err := os.Symlink("usr/lib", filepath.Join(src, "lib")); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("../x/", 30) + "target"
	if err := os.Symlink(long, filepath.Join(src, "long")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(src, "bin/su"), filepath.Join(src, "bin/su-hl")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(filepath.Join(src, "etc/hostname"), "user.note", []byte("hi"), 0); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	img := filepath.Join(out, "root.ext4")
	size, err := Make(ctx, src, img, Options{Label: "bangerroot"})
	if err != nil {
		t.Fatal(err)
	}
	noLeftovers(t, out, "root.ext4")
	if fi, _ := os.Stat(img); fi.Size() != size || size < MinSize {
		t.Errorf("image size %d, reported %d", fi.Size(), size)
	}
	fsck(t, img)

	if b, err := ReadFile(ctx, img, "/etc/hostname"); err != nil || string(b) != "banger\n" {
		t.Errorf("hostname = %q, %v", b, err)
	}
	if b, err := ReadFile(ctx, img, "/big"); err != nil || len(b) != 3000000 {
		t.Errorf("big: %d bytes, %v", len(b), err)
	}
	su, err := Stat(ctx, img, "/bin/su")
	if err != nil {
		t.Fatal(err)
	}
	if su.Mode != 0o4755 || su.Type != "regular" || su.Links != 2 || su.UID != 0 {
		t.Errorf("su = %+v", su)
	}
	if hl, _ := Stat(ctx, img, "/bin/su-hl"); hl == nil || hl.Ino != su.Ino {
		t.Errorf("hardlink not preserved: %+v vs %+v", hl, su)
	}
	for p, want := range map[string]string{"/lib": "usr/lib", "/long": long} {
		if in, err := Stat(ctx, img, p); err != nil || in.Type != "symlink" || in.LinkTarget != want {
			t.Errorf("%s = %+v, %v; want symlink to %q", p, in, err, want)
		}
	}
	if v, err := Xattr(ctx, img, "/etc/hostname", "user.note"); err != nil || string(v) != "hi" {
		t.Errorf("xattr = %q, %v", v, err)
	}
	ents, err := List(ctx, img, "/")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	if got := strings.Join(names, " "); !strings.Contains(got, "etc") || !strings.Contains(got, "bin") || !strings.Contains(got, "lib") {
		t.Errorf("root lists %q", got)
	}
	if _, err := Stat(ctx, img, "/missing"); err == nil {
		t.Error("stat of a missing path should fail")
	}
}

func TestMakeAppliesOverridesAndNodes(t *testing.T) {
	requireE2fsprogs(t)
	ctx := context.Background()
	src := t.TempDir()
	odd := `/home/we "quote"/f x`
	write(t, filepath.Join(src, odd), "data", 0o644)
	write(t, filepath.Join(src, "bin/ping"), "ping", 0o755)
	if err := os.Mkdir(filepath.Join(src, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	capV2 := []byte{1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	img := filepath.Join(t.TempDir(), "root.ext4")
	_, err := Make(ctx, src, img, Options{
		Overrides: []Override{
			{Path: odd, UID: 1000, GID: 2000, Mode: syscall.S_IFREG | 0o4750},
			{Path: "/home", UID: 1000, GID: 2000, Mode: syscall.S_IFDIR | 0o1777},
			{Path: "/bin/ping", Mode: syscall.S_IFREG | 0o755, Xattrs: map[string][]byte{"security.capability": capV2, "user.x": []byte("y")}},
		},
		Nodes: []Node{
			{Path: "/dev/null", Mode: syscall.S_IFCHR | 0o666, Major: 1, Minor: 3},
			{Path: "/dev/fifo", Mode: syscall.S_IFIFO | 0o600, UID: 5},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	fsck(t, img)
	if in, err := Stat(ctx, img, odd); err != nil || in.UID != 1000 || in.GID != 2000 || in.Mode != 0o4750 || in.Type != "regular" {
		t.Errorf("%s = %+v, %v", odd, in, err)
	}
	if in, err := Stat(ctx, img, "/home"); err != nil || in.Mode != 0o1777 || in.Type != "directory" || in.UID != 1000 {
		t.Errorf("/home = %+v, %v", in, err)
	}
	if v, err := Xattr(ctx, img, "/bin/ping", "security.capability"); err != nil || !bytes.Equal(v, capV2) {
		t.Errorf("capability = %x, %v", v, err)
	}
	if in, err := Stat(ctx, img, "/dev/null"); err != nil || in.Type != "character special" || in.Mode != 0o666 {
		t.Errorf("/dev/null = %+v, %v", in, err)
	}
	if in, err := Stat(ctx, img, "/dev/fifo"); err != nil || in.Type != "FIFO" || in.UID != 5 {
		t.Errorf("/dev/fifo = %+v, %v", in, err)
	}
}

func TestMakeFailureLeavesNothing(t *testing.T) {
	requireE2fsprogs(t)
	ctx := context.Background()
	src := t.TempDir()
	write(t, filepath.Join(src, "f"), strings.Repeat("x", 8<<20), 0o644)
	cases := map[string]Options{
		"too small":        {Size: 4 << 20},
		"missing override": {Overrides: []Override{{Path: "/nope", UID: 1}}},
		"newline in path":  {Overrides: []Override{{Path: "/a\nrm /f", UID: 1}}},
	}
	for name, opts := range cases {
		t.Run(name, func(t *testing.T) {
			out := t.TempDir()
			if _, err := Make(ctx, src, filepath.Join(out, "root.ext4"), opts); err == nil {
				t.Fatal("want an error")
			} else {
				t.Logf("refused: %v", err)
			}
			noLeftovers(t, out)
		})
	}
}

func TestMakeManySmallFiles(t *testing.T) {
	requireE2fsprogs(t)
	src := t.TempDir()
	for i := range 20000 {
		write(t, filepath.Join(src, fmt.Sprintf("d%02d/f%05d", i%50, i)), "", 0o644)
	}
	img := filepath.Join(t.TempDir(), "root.ext4")
	if _, err := Make(context.Background(), src, img, Options{}); err != nil {
		t.Fatalf("20000 empty files should fit the default size: %v", err)
	}
	ents, err := List(context.Background(), img, "/d07")
	if err != nil || len(ents) != 400 {
		t.Errorf("/d07 holds %d entries, %v", len(ents), err)
	}
}

func blockCount(t *testing.T, img string) int64 {
	t.Helper()
	out, err := exec.Command("dumpe2fs", "-h", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "Block count:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	t.Fatal("no block count")
	return 0
}

func TestGrow(t *testing.T) {
	requireE2fsprogs(t)
	ctx := context.Background()
	src := t.TempDir()
	write(t, filepath.Join(src, "keep"), "kept", 0o644)
	img := filepath.Join(t.TempDir(), "root.ext4")
	size, err := Make(ctx, src, img, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := size + 512<<20
	if err := Grow(ctx, img, want); err != nil {
		t.Fatal(err)
	}
	if got := blockCount(t, img) * 4096; got != want {
		t.Errorf("filesystem holds %d bytes, want %d", got, want)
	}
	fsck(t, img)
	if b, err := ReadFile(ctx, img, "/keep"); err != nil || string(b) != "kept" {
		t.Errorf("content after grow = %q, %v", b, err)
	}
	if err := Grow(ctx, img, want); err != nil {
		t.Errorf("grow to the same size: %v", err)
	}
	if err := Grow(ctx, img, size); !errors.Is(err, ErrShrink) {
		t.Errorf("shrink: %v, want ErrShrink", err)
	}
}

func TestSizeFor(t *testing.T) {
	size, inodes := sizeFor(Usage{Bytes: 200 << 20, Inodes: 10000})
	if size < 200<<20+40<<20+64<<20 || size%(4<<20) != 0 {
		t.Errorf("size %d for 200 MiB of content", size)
	}
	if inodes < 12500 {
		t.Errorf("inodes %d for 10000 entries", inodes)
	}
	if size, _ := sizeFor(Usage{}); size < MinSize || size > MinSize+16<<20 {
		t.Errorf("empty tree size %d, want about MinSize", size)
	}
}
