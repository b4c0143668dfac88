package debarchive

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/blakesmith/ar"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/bangerdev/banger/internal/download"
	"github.com/bangerdev/banger/internal/progress"
)

func hexSum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c
}

func newKey(t *testing.T, name string) *openpgp.Entity {
	t.Helper()
	e, err := openpgp.NewEntity(name, "test", name+"@example.org", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// writeKeyring stores e's public key as a binary keyring, like the ones in
// /usr/share/keyrings.
func writeKeyring(t *testing.T, p string, e *openpgp.Entity) {
	t.Helper()
	var buf bytes.Buffer
	if err := e.Serialize(&buf); err != nil {
		t.Fatal(err)
	}
	putFile(t, p, buf.String())
}

func clearSign(t testing.TB, e *openpgp.Entity, text string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := clearsign.Encode(&buf, e.PrivateKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(text))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// tarEntry describes one member of a test data.tar.
type tarEntry struct {
	name, body, link string
	typ              byte
}

func makeTar(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Linkname: e.link, ModTime: time.Unix(1700000000, 0)}
		switch e.typ {
		case tar.TypeDir:
			h.Mode = 0o755
		case tar.TypeReg:
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// makeDeb builds a .deb whose data member is compressed per ext (xz, zst, gz).
func makeDeb(t *testing.T, ext string, entries []tarEntry) []byte {
	t.Helper()
	raw := makeTar(t, entries)
	var data bytes.Buffer
	switch ext {
	case "xz":
		w, err := xz.NewWriter(&data)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(raw)
		w.Close()
	case "zst":
		w, err := zstd.NewWriter(&data)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(raw)
		w.Close()
	default:
		t.Fatalf("unknown ext %s", ext)
	}
	var deb bytes.Buffer
	aw := ar.NewWriter(&deb)
	aw.WriteGlobalHeader()
	for _, m := range []struct {
		name string
		body []byte
	}{
		{"debian-binary", []byte("2.0\n")},
		{"control.tar.xz", []byte("not read")},
		{"data.tar." + ext, data.Bytes()},
	} {
		if err := aw.WriteHeader(&ar.Header{Name: m.name, Size: int64(len(m.body)), Mode: 0o644, ModTime: time.Unix(1700000000, 0)}); err != nil {
			t.Fatal(err)
		}
		aw.Write(m.body)
	}
	return deb.Bytes()
}

// fakeArchive serves signed suites of an apt archive on 127.0.0.1.
type fakeArchive struct {
	t     *testing.T
	srv   *httptest.Server
	mu    sync.Mutex
	files map[string][]byte
	hits  map[string]int
}

func newFakeArchive(t *testing.T) *fakeArchive {
	fa := &fakeArchive{t: t, files: map[string][]byte{}, hits: map[string]int{}}
	fa.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fa.mu.Lock()
		body, ok := fa.files[r.URL.Path]
		fa.hits[r.URL.Path]++
		fa.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(body)
	}))
	t.Cleanup(fa.srv.Close)
	return fa
}

func (fa *fakeArchive) put(p string, body []byte) {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	fa.files[p] = body
}

func (fa *fakeArchive) hitCount(p string) int {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	return fa.hits[p]
}

type fakePkg struct {
	name, version, depends string
	deb                    []byte
}

// addSuite publishes pkgs as SUITE/main/binary-amd64/Packages.xz with an
// InRelease signed by key. tamper lets a test corrupt the signed text.
func (fa *fakeArchive) addSuite(base, suite string, key *openpgp.Entity, pkgs []fakePkg, tamper func(string) string) {
	t := fa.t
	var idx strings.Builder
	for _, p := range pkgs {
		fn := fmt.Sprintf("pool/main/%s_%s_amd64.deb", p.name, p.version)
		fa.put(base+"/"+fn, p.deb)
		fmt.Fprintf(&idx, "Package: %s\nVersion: %s\nArchitecture: amd64\n", p.name, p.version)
		if p.depends != "" {
			fmt.Fprintf(&idx, "Depends: %s\n", p.depends)
		}
		fmt.Fprintf(&idx, "Filename: %s\nSize: %d\nSHA256: %s\nDescription: test package\n multi-line description\n .\n more\n\n",
			fn, len(p.deb), hexSum(p.deb))
	}
	plain := []byte(idx.String())
	var xzBuf bytes.Buffer
	w, err := xz.NewWriter(&xzBuf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(plain)
	w.Close()
	dists := base + "/dists/" + suite
	fa.put(dists+"/main/binary-amd64/Packages.xz", xzBuf.Bytes())
	release := fmt.Sprintf("Origin: Test\nSuite: %s\nCodename: %s\nDate: %s\nValid-Until: %s\nArchitectures: amd64\nComponents: main\nSHA256:\n %s %d main/binary-amd64/Packages\n %s %d main/binary-amd64/Packages.xz\n",
		suite, suite, time.Now().UTC().Format(time.RFC1123), time.Now().Add(24*time.Hour).UTC().Format(time.RFC1123),
		hexSum(plain), len(plain), hexSum(xzBuf.Bytes()), xzBuf.Len())
	if tamper != nil {
		release = tamper(release)
	}
	fa.put(dists+"/InRelease", clearSign(t, key, release))
}

// fakeRoot writes a fake /etc/apt listing the archive's two suites, the
// second on its own URI, and the keyring that signs them.
func fakeRoot(t *testing.T, fa *fakeArchive, key *openpgp.Entity) string {
	root := t.TempDir()
	writeKeyring(t, filepath.Join(root, "usr/share/keyrings/test-archive.gpg"), key)
	putFile(t, filepath.Join(root, "etc/apt/sources.list.d/test.sources"), fmt.Sprintf(`Types: deb
URIs: %[1]s/debian
Suites: stable stable-updates
Components: main
Signed-By: /usr/share/keyrings/test-archive.gpg

Types: deb
URIs: %[1]s/debian-security
Suites: stable-security
Components: main
Signed-By: /usr/share/keyrings/test-archive.gpg
`, fa.srv.URL))
	return root
}

func newTestArchive(t *testing.T, root, cache string) *Archive {
	t.Helper()
	srcs, err := ReadHostSources(root)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Sources: srcs, Root: root, CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestResolveAcrossSuitesTakesHighestVersion(t *testing.T) {
	key := newKey(t, "archive")
	fa := newFakeArchive(t)
	oldDeb := makeDeb(t, "xz", []tarEntry{{name: "./boot/", typ: tar.TypeDir}, {name: "./boot/vmlinuz-1.0-1-test", body: "old kernel", typ: tar.TypeReg}})
	newDeb := makeDeb(t, "zst", []tarEntry{
		{name: "./", typ: tar.TypeDir},
		{name: "./boot/", typ: tar.TypeDir},
		{name: "./boot/vmlinuz-1.0-2-test", body: "new kernel", typ: tar.TypeReg},
		{name: "./lib/modules/1.0-2-test/kernel/a.ko", body: "module", typ: tar.TypeReg},
		{name: "./lib/modules/1.0-2-test/build", link: "/usr/src/linux-headers-1.0-2", typ: tar.TypeSymlink},
		{name: "./lib/modules/1.0-2-test/same.ko", link: "./lib/modules/1.0-2-test/kernel/a.ko", typ: tar.TypeLink},
		{name: "./usr/share/doc/x/changelog", body: "filtered out", typ: tar.TypeReg},
	})
	fa.addSuite("/debian", "stable", key, []fakePkg{
		{name: "linux-image-test-amd64", version: "1.0.1-1", depends: "linux-image-1.0-1-test (= 1.0.1-1)", deb: []byte("meta")},
		{name: "linux-image-1.0-1-test", version: "1.0.1-1", deb: oldDeb},
		{name: "tool", version: "2.0-1", deb: []byte("tool 2.0")},
	}, nil)
	fa.addSuite("/debian", "stable-updates", key, []fakePkg{
		{name: "tool", version: "2.0~rc1-1", deb: []byte("tool rc")},
	}, nil)
	fa.addSuite("/debian-security", "stable-security", key, []fakePkg{
		{name: "linux-image-test-amd64", version: "1.0.2-1", depends: "linux-image-1.0-2-test (= 1.0.2-1) | linux-image-other", deb: []byte("meta2")},
		{name: "linux-image-1.0-2-test", version: "1.0.2-1", deb: newDeb},
		{name: "linux-image-1.0-2-test", version: "1.0.3-1", deb: []byte("newer, but not what the metapackage pins")},
	}, nil)
	root := fakeRoot(t, fa, key)
	cache := t.TempDir()
	a := newTestArchive(t, root, cache)
	ctx := testCtx(t, 60*time.Second)

	tool, err := a.Resolve(ctx, "tool", nil)
	if err != nil {
		t.Fatal(err)
	}
	if tool.Version != "2.0-1" || tool.Suite != "stable" {
		t.Errorf("tool resolved to %s from %s, want 2.0-1 from stable (2.0~rc1 sorts lower)", tool.Version, tool.Suite)
	}
	meta, err := a.Resolve(ctx, "linux-image-test-amd64", nil)
	if err != nil {
		t.Fatal(err)
	}
	if meta.Version != "1.0.2-1" || meta.Suite != "stable-security" || meta.URI != fa.srv.URL+"/debian-security" {
		t.Errorf("metapackage resolved to %+v", meta)
	}
	img, err := a.ResolveImagePackage(ctx, "linux-image-test-amd64", nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.Name != "linux-image-1.0-2-test" || img.Version != "1.0.2-1" {
		t.Errorf("image package resolved to %s %s, want the pinned 1.0.2-1", img.Name, img.Version)
	}
	if _, err := a.Resolve(ctx, "no-such-package", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing package: got %v, want ErrNotFound", err)
	}

	// Fetch and extract the image, keeping boot/ and lib/ only.
	dir := t.TempDir()
	deb := filepath.Join(dir, "img.deb")
	var events []progress.Event
	if err := a.Fetch(ctx, img, deb, func(ev progress.Event) { events = append(events, ev) }); err != nil {
		t.Fatal(err)
	}
	if len(events) == 0 || events[len(events)-1].Done != int64(len(newDeb)) {
		t.Errorf("fetch progress events: %+v", events)
	}
	out := filepath.Join(dir, "root")
	err = ExtractDeb(deb, out, func(name string) bool {
		return strings.HasPrefix(name, "boot") || strings.HasPrefix(name, "lib")
	})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "boot/vmlinuz-1.0-2-test")); string(b) != "new kernel" {
		t.Errorf("extracted kernel: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "lib/modules/1.0-2-test/same.ko")); string(b) != "module" {
		t.Errorf("hard link content: %q", b)
	}
	if l, _ := os.Readlink(filepath.Join(out, "lib/modules/1.0-2-test/build")); l != "../../../usr/src/linux-headers-1.0-2" {
		t.Errorf("absolute symlink should be rewritten inside the root, got %q", l)
	}
	if _, err := os.Stat(filepath.Join(out, "usr/share/doc")); !os.IsNotExist(err) {
		t.Errorf("filtered entry was extracted: %v", err)
	}

	// A second archive on the same cache must not download the indices again.
	xzPath := "/debian/dists/stable/main/binary-amd64/Packages.xz"
	before := fa.hitCount(xzPath)
	if before != 1 {
		t.Fatalf("Packages.xz fetched %d times by one Archive, want 1 (in-memory reuse)", before)
	}
	b := newTestArchive(t, root, cache)
	if _, err := b.Resolve(ctx, "tool", nil); err != nil {
		t.Fatal(err)
	}
	if got := fa.hitCount(xzPath); got != before {
		t.Errorf("Packages.xz fetched again despite the cache (%d -> %d)", before, got)
	}
	// A corrupted cache file is detected by its hash and fetched again.
	ents, _ := filepath.Glob(filepath.Join(cache, "indices", "*.Packages"))
	if len(ents) != 3 {
		t.Fatalf("expected 3 cached indices, got %v", ents)
	}
	for _, e := range ents {
		os.WriteFile(e, []byte("Package: tool\nVersion: 99\n"), 0o644)
	}
	c := newTestArchive(t, root, cache)
	tool, err = c.Resolve(ctx, "tool", nil)
	if err != nil || tool.Version != "2.0-1" {
		t.Fatalf("resolve after cache corruption: %+v %v", tool, err)
	}
	if got := fa.hitCount(xzPath); got != before+1 {
		t.Errorf("corrupted cache not refetched: %d fetches", got)
	}
}

func TestResolveRejectsBadSignatures(t *testing.T) {
	trusted := newKey(t, "archive")
	other := newKey(t, "intruder")
	pkgs := []fakePkg{{name: "tool", version: "1.0", deb: []byte("x")}}

	cases := map[string]func(fa *fakeArchive){
		"signed by an unknown key": func(fa *fakeArchive) {
			fa.addSuite("/debian-security", "stable-security", other, pkgs, nil)
		},
		"signed text altered": func(fa *fakeArchive) {
			fa.addSuite("/debian-security", "stable-security", trusted, pkgs, nil)
			p := "/debian-security/dists/stable-security/InRelease"
			fa.mu.Lock()
			fa.files[p] = bytes.Replace(fa.files[p], []byte("Suite: stable-security"), []byte("Suite: evil-security"), 1)
			fa.mu.Unlock()
		},
		"not signed at all": func(fa *fakeArchive) {
			fa.put("/debian-security/dists/stable-security/InRelease", []byte("Suite: stable-security\nSHA256:\n "+strings.Repeat("0", 64)+" 1 main/binary-amd64/Packages\n"))
		},
	}
	for name, breakIt := range cases {
		t.Run(name, func(t *testing.T) {
			fa := newFakeArchive(t)
			fa.addSuite("/debian", "stable", trusted, pkgs, nil)
			fa.addSuite("/debian", "stable-updates", trusted, pkgs, nil)
			breakIt(fa)
			a := newTestArchive(t, fakeRoot(t, fa, trusted), t.TempDir())
			_, err := a.Resolve(testCtx(t, 30*time.Second), "tool", nil)
			if !errors.Is(err, ErrBadSignature) {
				t.Fatalf("got %v, want ErrBadSignature", err)
			}
		})
	}
}

func TestResolveRejectsWrongIndexHashAndExpiredRelease(t *testing.T) {
	key := newKey(t, "archive")
	pkgs := []fakePkg{{name: "tool", version: "1.0", deb: []byte("x")}}
	fa := newFakeArchive(t)
	fa.addSuite("/debian", "stable", key, pkgs, nil)
	fa.addSuite("/debian", "stable-updates", key, pkgs, nil)
	// The signed InRelease names a different hash for the compressed index
	// (of an index unlike the others, so no verified copy can stand in).
	fa.addSuite("/debian-security", "stable-security", key, []fakePkg{{name: "tool", version: "1.1", deb: []byte("y")}}, func(rel string) string {
		lines := strings.Split(rel, "\n")
		for i, l := range lines {
			if strings.HasSuffix(l, "Packages.xz") {
				lines[i] = " " + strings.Repeat("ab", 32) + l[65:]
			}
		}
		return strings.Join(lines, "\n")
	})
	root := fakeRoot(t, fa, key)
	cache := t.TempDir()
	_, err := newTestArchive(t, root, cache).Resolve(testCtx(t, 30*time.Second), "tool", nil)
	if !errors.Is(err, download.ErrHashMismatch) {
		t.Fatalf("got %v, want a hash mismatch", err)
	}
	left, _ := filepath.Glob(filepath.Join(cache, "indices", "*"))
	sort.Strings(left)
	for _, l := range left {
		if strings.Contains(filepath.Base(l), "fetch") {
			t.Errorf("staging left in cache: %s", l)
		}
	}

	fa2 := newFakeArchive(t)
	fa2.addSuite("/debian", "stable", key, pkgs, func(rel string) string {
		return strings.Replace(rel, "Valid-Until: ", "Valid-Until: Mon, 02 Jan 2006 15:04:05 UTC\nX-Old-Valid-Until: ", 1)
	})
	fa2.addSuite("/debian", "stable-updates", key, pkgs, nil)
	fa2.addSuite("/debian-security", "stable-security", key, pkgs, nil)
	_, err = newTestArchive(t, fakeRoot(t, fa2, key), t.TempDir()).Resolve(testCtx(t, 30*time.Second), "tool", nil)
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("got %v, want ErrExpired", err)
	}
}

func TestFetchRejectsWrongPackageHash(t *testing.T) {
	key := newKey(t, "archive")
	fa := newFakeArchive(t)
	pkgs := []fakePkg{{name: "tool", version: "1.0", deb: []byte("the real deb")}}
	fa.addSuite("/debian", "stable", key, pkgs, nil)
	fa.addSuite("/debian", "stable-updates", key, pkgs, nil)
	fa.addSuite("/debian-security", "stable-security", key, pkgs, nil)
	a := newTestArchive(t, fakeRoot(t, fa, key), t.TempDir())
	ctx := testCtx(t, 30*time.Second)
	p, err := a.Resolve(ctx, "tool", nil)
	if err != nil {
		t.Fatal(err)
	}
	fa.put("/debian/"+p.Filename, []byte("a swapped deb"))
	fa.put("/debian-security/"+p.Filename, []byte("a swapped deb"))
	dir := t.TempDir()
	if err := a.Fetch(ctx, p, filepath.Join(dir, "tool.deb"), nil); !errors.Is(err, download.ErrHashMismatch) && !errors.Is(err, download.ErrTruncated) {
		t.Fatalf("got %v, want the download to be rejected", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("rejected download left %d files", len(ents))
	}
	p.Filename = "../../etc/passwd"
	if err := a.Fetch(ctx, p, filepath.Join(dir, "x.deb"), nil); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("index filename escaping the archive: got %v", err)
	}
}

func TestExtractDebRefusesEscapes(t *testing.T) {
	cases := map[string][]tarEntry{
		"dot-dot name":        {{name: "./../escaped", body: "x", typ: tar.TypeReg}},
		"nested dot-dot":      {{name: "./lib/../../escaped", body: "x", typ: tar.TypeReg}},
		"absolute name":       {{name: "/escaped", body: "x", typ: tar.TypeReg}},
		"symlink escape":      {{name: "./lib/", typ: tar.TypeDir}, {name: "./lib/up", link: "../../escaped", typ: tar.TypeSymlink}},
		"hard link escape":    {{name: "./link", link: "../escaped", typ: tar.TypeLink}},
		"write through a dir": {{name: "./d", link: "../", typ: tar.TypeSymlink}, {name: "./d/escaped", body: "x", typ: tar.TypeReg}},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			dest := filepath.Join(parent, "root")
			deb := filepath.Join(parent, "evil.deb")
			if err := os.WriteFile(deb, makeDeb(t, "xz", entries), 0o644); err != nil {
				t.Fatal(err)
			}
			err := ExtractDeb(deb, dest, nil)
			if err == nil {
				t.Fatal("expected extraction to fail")
			}
			if _, serr := os.Lstat(filepath.Join(parent, "escaped")); !os.IsNotExist(serr) {
				t.Fatalf("a file escaped the extraction root (err was %v)", err)
			}
		})
	}
}

// TestInlineAndFingerprintSignedBy covers the other two Signed-By forms: an
// armored key block inside the .sources file, and a fingerprint naming a
// key of the host's trusted.gpg.d.
func TestInlineAndFingerprintSignedBy(t *testing.T) {
	key := newKey(t, "archive")
	other := newKey(t, "other")
	pkgs := []fakePkg{{name: "tool", version: "3.0", deb: []byte("x")}}
	fa := newFakeArchive(t)
	fa.addSuite("/debian", "stable", key, pkgs, nil)

	var armored bytes.Buffer
	w, err := armor.Encode(&armored, openpgp.PublicKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	key.Serialize(w)
	w.Close()
	var inline strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(armored.String()), "\n") {
		if line == "" {
			line = "."
		}
		inline.WriteString(" " + line + "\n")
	}
	fp := strings.ToUpper(hex.EncodeToString(key.PrimaryKey.Fingerprint))
	for name, signedBy := range map[string]string{"inline": "\n" + inline.String(), "fingerprint": " " + fp + "\n"} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			writeKeyring(t, filepath.Join(root, "etc/apt/trusted.gpg.d/other.gpg"), other)
			writeKeyring(t, filepath.Join(root, "etc/apt/trusted.gpg.d/archive.gpg"), key)
			putFile(t, filepath.Join(root, "etc/apt/sources.list.d/test.sources"),
				fmt.Sprintf("Types: deb\nURIs: %s/debian\nSuites: stable\nComponents: main\nSigned-By:%s", fa.srv.URL, signedBy))
			p, err := newTestArchive(t, root, t.TempDir()).Resolve(testCtx(t, 30*time.Second), "tool", nil)
			if err != nil || p.Version != "3.0" {
				t.Fatalf("resolve: %+v %v", p, err)
			}
		})
	}
	// A fingerprint of a key that did not sign the suite must fail.
	root := t.TempDir()
	writeKeyring(t, filepath.Join(root, "etc/apt/trusted.gpg.d/other.gpg"), other)
	writeKeyring(t, filepath.Join(root, "etc/apt/trusted.gpg.d/archive.gpg"), key)
	putFile(t, filepath.Join(root, "etc/apt/sources.list.d/test.sources"),
		fmt.Sprintf("Types: deb\nURIs: %s/debian\nSuites: stable\nComponents: main\nSigned-By: %s\n", fa.srv.URL, strings.ToUpper(hex.EncodeToString(other.PrimaryKey.Fingerprint))))
	if _, err := newTestArchive(t, root, t.TempDir()).Resolve(testCtx(t, 30*time.Second), "tool", nil); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("suite signed by a key other than the named one: %v", err)
	}
}
