package flatten

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/testutil"
)

// capV2 is a VFS_CAP_REVISION_2 security.capability value granting
// cap_net_bind_service (bit 10) permitted+effective.
var capV2 = string([]byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})

func getxattr(t *testing.T, p, name string) string {
	t.Helper()
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		t.Fatalf("getxattr %s %s: %v", p, name, err)
	}
	return string(buf[:n])
}

func lstat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatalf("lstat: %v", err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

func mustNotExist(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s should not exist (err %v)", p, err)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// semanticsLayers is a three-layer image exercising whiteouts, opaque
// directories (marker before and after same-layer entries), links, modes,
// ownership and xattrs.
func semanticsLayers(t *testing.T) [][]byte {
	l1 := layerTar(t,
		ent{name: "etc/", typ: tar.TypeDir},
		ent{name: "etc/passwd", body: "root:x:0:0\n"},
		ent{name: "etc/gone", body: "lower"},
		ent{name: "usr/lib/x86_64-linux-gnu/ld.so", body: "ELF", mode: 0o755},
		ent{name: "lib", typ: tar.TypeSymlink, link: "usr/lib"},
		ent{name: "opq1/", typ: tar.TypeDir},
		ent{name: "opq1/lower", body: "lower"},
		ent{name: "opq1/sub/deep", body: "lower"},
		ent{name: "opq2/", typ: tar.TypeDir},
		ent{name: "opq2/lower", body: "lower"},
		ent{name: "olddir/", typ: tar.TypeDir},
		ent{name: "olddir/f", body: "x"},
		ent{name: "var/", typ: tar.TypeDir},
		ent{name: "var/run", typ: tar.TypeSymlink, link: "/run"},
	)
	l2 := layerTar(t,
		ent{name: "etc/.wh.gone"},
		ent{name: ".wh.olddir"},
		ent{name: "opq1/", typ: tar.TypeDir},
		ent{name: "opq1/.wh..wh..opq"},
		ent{name: "opq1/upper", body: "upper"},
		ent{name: "opq2/", typ: tar.TypeDir},
		ent{name: "opq2/upper", body: "upper"},
		ent{name: "opq2/.wh..wh..opq"},
		ent{name: "bin/", typ: tar.TypeDir},
		ent{name: "bin/su", body: "su", mode: 0o4755},
		ent{name: "bin/sgid", body: "g", mode: 0o2711, gid: 42},
		ent{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
		ent{name: "home/user/", typ: tar.TypeDir, mode: 0o750, uid: 1000, gid: 2000},
		ent{name: "home/user/file", body: "mine", mode: 0o600, uid: 1000, gid: 2000},
		ent{name: "bin/ping", body: "ping", mode: 0o755, xattrs: map[string]string{"security.capability": capV2, "user.note": "hello"}},
		ent{name: "bin/ping-hl", typ: tar.TypeLink, link: "bin/ping"},
		ent{name: "lib64/ld-linux-x86-64.so.2", typ: tar.TypeSymlink, link: "../lib/x86_64-linux-gnu/ld.so"},
		ent{name: "abs", typ: tar.TypeSymlink, link: "/etc/passwd"},
		ent{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1},
		ent{name: "fifo", typ: tar.TypeFifo},
		ent{name: "./dotted", body: "dot"},
		ent{name: "/absolute-name", body: "abs"},
	)
	l3 := layerTar(t,
		ent{name: "etc/passwd", body: "root:x:0:0\nuser:x:1000:2000\n"},
		ent{name: "olddir", body: "now a file"},
	)
	return [][]byte{l1, l2, l3}
}

func TestApplySemantics(t *testing.T) {
	testutil.RequireRoot(t) // chown to arbitrary ids and security.capability need root
	root := t.TempDir()
	res, err := applyLayers(root, Options{}, semanticsLayers(t)...)
	if err != nil {
		t.Fatal(err)
	}
	p := func(s string) string { return filepath.Join(root, s) }

	if got := readFile(t, p("etc/passwd")); got != "root:x:0:0\nuser:x:1000:2000\n" {
		t.Errorf("etc/passwd = %q, want the top layer's", got)
	}
	mustNotExist(t, p("etc/gone"))
	mustNotExist(t, p("opq1/lower"))
	mustNotExist(t, p("opq1/sub"))
	mustNotExist(t, p("opq2/lower"))
	if readFile(t, p("opq1/upper")) != "upper" || readFile(t, p("opq2/upper")) != "upper" {
		t.Error("opaque directory lost entries of its own layer")
	}
	if readFile(t, p("olddir")) != "now a file" {
		t.Error("olddir should be a file")
	}
	if st := lstat(t, p("bin/su")); st.Mode&0o7777 != 0o4755 {
		t.Errorf("bin/su mode %o, want 4755", st.Mode&0o7777)
	}
	if st := lstat(t, p("bin/sgid")); st.Mode&0o7777 != 0o2711 || st.Gid != 42 {
		t.Errorf("bin/sgid mode %o gid %d, want 2711 gid 42", st.Mode&0o7777, st.Gid)
	}
	if st := lstat(t, p("tmp")); st.Mode&0o7777 != 0o1777 {
		t.Errorf("tmp mode %o, want 1777", st.Mode&0o7777)
	}
	if st := lstat(t, p("home/user")); st.Uid != 1000 || st.Gid != 2000 || st.Mode&0o7777 != 0o750 {
		t.Errorf("home/user uid %d gid %d mode %o", st.Uid, st.Gid, st.Mode&0o7777)
	}
	if st := lstat(t, p("home/user/file")); st.Uid != 1000 || st.Gid != 2000 || st.Mode&0o7777 != 0o600 {
		t.Errorf("home/user/file uid %d gid %d mode %o", st.Uid, st.Gid, st.Mode&0o7777)
	}
	if fi, _ := os.Stat(p("home/user/file")); !fi.ModTime().Equal(testMtime) {
		t.Errorf("mtime %v, want %v", fi.ModTime(), testMtime)
	}
	if fi, _ := os.Stat(p("home")); !fi.ModTime().Equal(testMtime) && fi.Mode()&0o777 != 0o755 {
		t.Errorf("implicit dir home: mode %v", fi.Mode())
	}
	if fi, _ := os.Stat(p("etc")); !fi.ModTime().Equal(testMtime) {
		t.Errorf("directory mtime %v, want %v (deferred to Finish)", fi.ModTime(), testMtime)
	}
	if st1, st2 := lstat(t, p("bin/ping")), lstat(t, p("bin/ping-hl")); st1.Ino != st2.Ino || st1.Nlink != 2 {
		t.Errorf("hardlink: inodes %d/%d nlink %d", st1.Ino, st2.Ino, st1.Nlink)
	}
	if got := getxattr(t, p("bin/ping"), "security.capability"); got != capV2 {
		t.Errorf("security.capability = %x", got)
	}
	if got := getxattr(t, p("bin/ping"), "user.note"); got != "hello" {
		t.Errorf("user.note = %q", got)
	}
	for link, want := range map[string]string{
		"lib": "usr/lib", "lib64/ld-linux-x86-64.so.2": "../lib/x86_64-linux-gnu/ld.so",
		"abs": "/etc/passwd", "var/run": "/run",
	} {
		if got, err := os.Readlink(p(link)); err != nil || got != want {
			t.Errorf("readlink %s = %q, %v; want %q", link, got, err, want)
		}
	}
	if readFile(t, p("lib64/ld-linux-x86-64.so.2")) != "ELF" {
		t.Error("in-root relative symlink does not resolve")
	}
	if readFile(t, p("dotted")) != "dot" || readFile(t, p("absolute-name")) != "abs" {
		t.Error("./ and / prefixed names not extracted relative to the root")
	}
	mustNotExist(t, p("dev/null"))
	mustNotExist(t, p("fifo"))
	if len(res.Skipped) != 2 || res.Skipped[0].Path != "/dev/null" || res.Skipped[0].Mode != unix.S_IFCHR|0o666 || res.Skipped[0].Major != 1 {
		t.Errorf("skipped = %+v", res.Skipped)
	}
	if len(res.Attrs) != 0 {
		t.Errorf("root extraction should record no attrs, got %+v", res.Attrs)
	}
}

func TestApplyRecordOwnership(t *testing.T) {
	root := t.TempDir()
	res, err := applyLayers(root, Options{RecordOwnership: true}, semanticsLayers(t)...)
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string]Attr{}
	for _, a := range res.Attrs {
		byPath[a.Path] = a
	}
	want := map[string]Attr{
		"/bin/su":         {UID: 0, GID: 0, Mode: unix.S_IFREG | 0o4755},
		"/tmp":            {Mode: unix.S_IFDIR | 0o1777},
		"/home":           {Mode: unix.S_IFDIR | 0o755},
		"/home/user":      {UID: 1000, GID: 2000, Mode: unix.S_IFDIR | 0o750},
		"/home/user/file": {UID: 1000, GID: 2000, Mode: unix.S_IFREG | 0o600},
		"/lib":            {Mode: unix.S_IFLNK | 0o777},
		"/bin/ping-hl":    {Mode: unix.S_IFREG | 0o755},
		"/olddir":         {Mode: unix.S_IFREG | 0o644},
	}
	for p, w := range want {
		got, ok := byPath[p]
		if !ok || got.UID != w.UID || got.GID != w.GID || got.Mode != w.Mode {
			t.Errorf("attr %s = %+v (present %v), want uid %d gid %d mode %o", p, got, ok, w.UID, w.GID, w.Mode)
		}
	}
	for _, gone := range []string{"/etc/gone", "/opq1/lower", "/opq1/sub", "/opq1/sub/deep", "/olddir/f"} {
		if _, ok := byPath[gone]; ok {
			t.Errorf("attr recorded for removed path %s", gone)
		}
	}
	if string(byPath["/bin/ping"].Xattrs["security.capability"]) != capV2 {
		t.Errorf("capability not recorded: %+v", byPath["/bin/ping"])
	}
	// On disk, the special bits wait for the image build; the owner can read.
	if st := lstat(t, filepath.Join(root, "bin/su")); st.Mode&0o7000 != 0 {
		t.Errorf("on-disk bin/su mode %o should carry no setuid in record mode", st.Mode&0o7777)
	}
	if st := lstat(t, filepath.Join(root, "home/user/file")); st.Mode&0o600 != 0o600 || st.Uid != uint32(os.Geteuid()) {
		t.Errorf("on-disk home/user/file mode %o uid %d", st.Mode&0o7777, st.Uid)
	}
}

// hostileCase is one attack: layers built against a sandbox, and the
// expectation: an error mentioning wantErr, or success with check passing.
type hostileCase struct {
	name    string
	layers  func(t testing.TB, outside string) [][]byte
	wantErr error // nil: the case must be neutralised, not refused
	check   func(t *testing.T, root string)
}

func one(ents ...ent) func(testing.TB, string) [][]byte {
	return func(t testing.TB, _ string) [][]byte { return [][]byte{layerTar(t, ents...)} }
}

func hostileCorpus() []hostileCase {
	return []hostileCase{
		{name: "dotdot file", layers: one(ent{name: "../outside/sentinel", body: "pwned"}), wantErr: ErrUnsafePath},
		{name: "dotdot inside name", layers: one(ent{name: "a/../../outside/sentinel", body: "pwned"}), wantErr: ErrUnsafePath},
		{name: "absolute name is rooted", layers: func(t testing.TB, outside string) [][]byte {
			return [][]byte{layerTar(t, ent{name: outside + "/sentinel", body: "pwned"})}
		}, check: func(t *testing.T, root string) {
			// The name was outside+"/sentinel"; it lands at that path under the root.
			base := filepath.Dir(root)
			if readFile(t, filepath.Join(root, base, "outside/sentinel")) != "pwned" {
				t.Error("absolute name not extracted under the root")
			}
		}},
		{name: "symlink ancestor same layer absolute", layers: func(t testing.TB, outside string) [][]byte {
			return [][]byte{layerTar(t, ent{name: "lnk", typ: tar.TypeSymlink, link: outside}, ent{name: "lnk/sentinel", body: "pwned"})}
		}, wantErr: ErrUnsafePath},
		{name: "symlink ancestor same layer relative", layers: one(
			ent{name: "lnk", typ: tar.TypeSymlink, link: "../outside"}, ent{name: "lnk/sentinel", body: "pwned"}), wantErr: ErrUnsafePath},
		{name: "symlink ancestor later layer", layers: func(t testing.TB, outside string) [][]byte {
			return [][]byte{
				layerTar(t, ent{name: "a/", typ: tar.TypeDir}, ent{name: "a/lnk", typ: tar.TypeSymlink, link: strings.Repeat("../", 12) + strings.TrimPrefix(outside, "/")}),
				layerTar(t, ent{name: "a/lnk/sentinel", body: "pwned"}),
			}
		}, wantErr: ErrUnsafePath},
		{name: "symlink ancestor new dir through link", layers: func(t testing.TB, outside string) [][]byte {
			return [][]byte{layerTar(t, ent{name: "lnk", typ: tar.TypeSymlink, link: outside}, ent{name: "lnk/newdir/", typ: tar.TypeDir})}
		}, wantErr: ErrUnsafePath},
		{name: "hardlink outside", layers: one(ent{name: "hl", typ: tar.TypeLink, link: "../outside/sentinel"}), wantErr: ErrUnsafePath},
		{name: "hardlink through symlink", layers: func(t testing.TB, outside string) [][]byte {
			return [][]byte{layerTar(t, ent{name: "lnk", typ: tar.TypeSymlink, link: outside}, ent{name: "hl", typ: tar.TypeLink, link: "lnk/sentinel"})}
		}, wantErr: ErrUnsafePath},
		{name: "hardlink absolute stays in root", layers: func(t testing.TB, outside string) [][]byte {
			return [][]byte{layerTar(t, ent{name: "hl", typ: tar.TypeLink, link: outside + "/sentinel"})}
		}, wantErr: syscall.ENOENT},
		{name: "hardlink to symlink links the symlink", layers: func(t testing.TB, outside string) [][]byte {
			return [][]byte{
				layerTar(t, ent{name: "ls", typ: tar.TypeSymlink, link: outside + "/sentinel"}, ent{name: "hl", typ: tar.TypeLink, link: "ls"}),
				layerTar(t, ent{name: "hl", body: "replaced"}),
			}
		}, check: func(t *testing.T, root string) {
			if readFile(t, filepath.Join(root, "hl")) != "replaced" {
				t.Error("hl should be a plain file now")
			}
		}},
		{name: "file over symlink replaces the link", layers: func(t testing.TB, outside string) [][]byte {
			return [][]byte{
				layerTar(t, ent{name: "f", typ: tar.TypeSymlink, link: outside + "/sentinel"}),
				layerTar(t, ent{name: "f", body: "pwned"}),
			}
		}, check: func(t *testing.T, root string) {
			if readFile(t, filepath.Join(root, "f")) != "pwned" {
				t.Error("f should be the new file")
			}
		}},
		{name: "symlink replaces directory", layers: func(t testing.TB, outside string) [][]byte {
			return [][]byte{
				layerTar(t, ent{name: "d/", typ: tar.TypeDir}, ent{name: "d/f", body: "x"}),
				layerTar(t, ent{name: "d", typ: tar.TypeSymlink, link: outside}),
				layerTar(t, ent{name: "d/sentinel", body: "pwned"}),
			}
		}, wantErr: ErrUnsafePath},
		{name: "directory replaces symlink", layers: func(t testing.TB, outside string) [][]byte {
			return [][]byte{
				layerTar(t, ent{name: "d", typ: tar.TypeSymlink, link: outside}),
				layerTar(t, ent{name: "d/", typ: tar.TypeDir, mode: 0o700}, ent{name: "d/sentinel", body: "inside"}),
			}
		}, check: func(t *testing.T, root string) {
			if fi, err := os.Lstat(filepath.Join(root, "d")); err != nil || !fi.IsDir() {
				t.Errorf("d should be a real directory: %v %v", fi, err)
			}
			if readFile(t, filepath.Join(root, "d/sentinel")) != "inside" {
				t.Error("d/sentinel should be inside the root")
			}
		}},
		{name: "whiteout through symlink", layers: func(t testing.TB, outside string) [][]byte {
			return [][]byte{layerTar(t, ent{name: "lnk", typ: tar.TypeSymlink, link: outside}), layerTar(t, ent{name: "lnk/.wh.sentinel"})}
		}, wantErr: ErrUnsafePath},
		{name: "opaque through symlink", layers: func(t testing.TB, outside string) [][]byte {
			return [][]byte{layerTar(t, ent{name: "lnk", typ: tar.TypeSymlink, link: outside}), layerTar(t, ent{name: "lnk/.wh..wh..opq"})}
		}, wantErr: ErrUnsafePath},
		{name: "whiteout of dotdot", layers: one(ent{name: ".wh.."}), wantErr: ErrUnsafePath},
		{name: "whiteout .wh...", layers: one(ent{name: ".wh..."}), wantErr: ErrUnsafePath},
		{name: "whiteout a/.wh.../..", layers: one(ent{name: "a/.wh.../.."}), wantErr: ErrUnsafePath},
		{name: "whiteout empty name", layers: one(ent{name: "a/.wh."}), wantErr: ErrUnsafePath},
		{name: "whiteout parent via dotdot", layers: one(ent{name: "../.wh.outside"}), wantErr: ErrUnsafePath},
		{name: "opaque at root is contained", layers: func(t testing.TB, outside string) [][]byte {
			return [][]byte{layerTar(t, ent{name: "keep", body: "k"}), layerTar(t, ent{name: ".wh..wh..opq"})}
		}, check: func(t *testing.T, root string) { mustNotExist(t, filepath.Join(root, "keep")) }},
		{name: "dot entries apply to root", layers: one(ent{name: "./", typ: tar.TypeDir, mode: 0o755}, ent{name: "/.", typ: tar.TypeDir, mode: 0o755}, ent{name: ".", typ: tar.TypeDir, mode: 0o755}),
			check: func(t *testing.T, root string) {
				if fi, _ := os.Stat(root); fi.Mode().Perm() != 0o755 {
					t.Errorf("root mode %v", fi.Mode())
				}
			}},
		{name: "file named as root", layers: one(ent{name: ".", body: "x"}), wantErr: ErrUnsafePath},
		{name: "device nodes skipped", layers: one(ent{name: "dev/sda", typ: tar.TypeBlock, major: 8}, ent{name: "p", typ: tar.TypeFifo}),
			check: func(t *testing.T, root string) {
				mustNotExist(t, filepath.Join(root, "dev/sda"))
				mustNotExist(t, filepath.Join(root, "p"))
			}},
		{name: "huge size", layers: one(ent{name: "big", size: 1 << 40}), wantErr: ErrTooLarge},
		{name: "symlink target is data", layers: one(ent{name: "etc", typ: tar.TypeSymlink, link: "../../../../../../../etc"}),
			check: func(t *testing.T, root string) {
				if l, _ := os.Readlink(filepath.Join(root, "etc")); l != "../../../../../../../etc" {
					t.Errorf("link = %q", l)
				}
			}},
		{name: "truncated layer", layers: func(t testing.TB, _ string) [][]byte {
			l := layerTar(t, ent{name: "f", body: strings.Repeat("x", 4096)})
			return [][]byte{l[:1024]}
		}, wantErr: errAny},
	}
}

var errAny = errors.New("any error")

func TestHostileCorpus(t *testing.T) {
	for _, tc := range hostileCorpus() {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			root, outside, sentinel := sandbox(t, base)
			before := snapshot(t, base, root)
			_, err := applyLayers(root, Options{MaxEntrySize: 1 << 30}, tc.layers(t, outside)...)
			sameSnapshot(t, before, snapshot(t, base, root))
			if readFile(t, sentinel) != "untouched" {
				t.Fatal("sentinel changed")
			}
			switch {
			case tc.wantErr == errAny:
				if err == nil {
					t.Fatal("want an error")
				}
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				t.Logf("refused: %v", err)
			default:
				if err != nil {
					t.Fatalf("want the case neutralised, got %v", err)
				}
				if tc.check != nil {
					tc.check(t, root)
				}
			}
		})
	}
}

func TestCleanName(t *testing.T) {
	for in, want := range map[string]string{"./a/b": "a/b", "/a//b/": "a/b", "/.": "", "./": "", "a/./b": "a/b"} {
		if got, err := cleanName(in); err != nil || got != want {
			t.Errorf("cleanName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"a\x00b", "..", "a/../b", "../x", "a/.."} {
		if _, err := cleanName(bad); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("cleanName(%q) err = %v, want ErrUnsafePath", bad, err)
		}
	}
}

func TestEntryWithNUL(t *testing.T) {
	root := t.TempDir()
	a, err := New(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.entry(&tar.Header{Name: "a\x00/../../x", Typeflag: tar.TypeReg}, strings.NewReader("")); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("NUL name: %v", err)
	}
	if err := a.entry(&tar.Header{Name: "s", Typeflag: tar.TypeSymlink, Linkname: "x\x00y"}, strings.NewReader("")); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("NUL link: %v", err)
	}
}

func TestSizeCaps(t *testing.T) {
	root := t.TempDir()
	l := layerTar(t, ent{name: "a", body: strings.Repeat("x", 600)}, ent{name: "b", body: strings.Repeat("x", 600)})
	if _, err := applyLayers(root, Options{MaxTotalSize: 1000}, l); !errors.Is(err, ErrTooLarge) {
		t.Errorf("total cap: %v", err)
	}
	if _, err := applyLayers(t.TempDir(), Options{MaxEntrySize: 500}, l); !errors.Is(err, ErrTooLarge) {
		t.Errorf("entry cap: %v", err)
	}
	if _, err := applyLayers(t.TempDir(), Options{MaxEntries: 1}, l); !errors.Is(err, ErrTooLarge) {
		t.Errorf("entries cap: %v", err)
	}
}
