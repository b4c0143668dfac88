package imagecat

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestHostMirrorFromDeb822(t *testing.T) {
	root := t.TempDir()
	// The updates suite and the security archive come first: the release
	// suite must still pick its own stanza.
	writeFile(t, filepath.Join(root, "etc/apt/sources.list.d/debian.sources"), `Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/sec.gpg

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://updates.example/debian
Suites: bookworm-updates
Components: main

Types: deb
# a comment inside the stanza
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`)
	writeFile(t, filepath.Join(root, "usr/share/keyrings/debian-archive-keyring.gpg"), "key")
	m, ok, err := HostMirror(root, "bookworm")
	if err != nil || !ok {
		t.Fatalf("HostMirror: ok=%v err=%v", ok, err)
	}
	if m.URI != "http://mirror.example/debian" || m.From != "host" {
		t.Fatalf("mirror = %+v", m)
	}
	if want := filepath.Join(root, "usr/share/keyrings/debian-archive-keyring.gpg"); m.Keyring != want {
		t.Fatalf("keyring = %q, want %q", m.Keyring, want)
	}
	if _, ok, _ := HostMirror(root, "trixie"); ok {
		t.Fatal("found a mirror for a suite the sources do not list")
	}
}

func TestHostMirrorFromLegacyList(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/apt/sources.list"), `# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/missing.gpg] http://legacy.example/debian bookworm main contrib
`)
	// A disabled file must be ignored, as apt ignores it.
	writeFile(t, filepath.Join(root, "etc/apt/sources.list.d/x.sources.disabled"), "Types: deb\nURIs: http://disabled.example/debian\nSuites: bookworm\n")
	m, ok, err := HostMirror(root, "bookworm")
	if err != nil || !ok {
		t.Fatalf("HostMirror: ok=%v err=%v", ok, err)
	}
	if m.URI != "http://legacy.example/debian" || m.Keyring != "" {
		t.Fatalf("mirror = %+v (a missing keyring must be dropped)", m)
	}
}

func TestResolveMirrorPrecedence(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/apt/sources.list"), "deb http://host.example/debian bookworm main\n")
	writeFile(t, filepath.Join(root, DefaultKeyring), "key")
	e := Entry{Name: "d", Kind: KindDebootstrap, Suite: "bookworm"}

	m, err := ResolveMirror(root, "http://config.example/debian/", e)
	if err != nil || m.URI != "http://config.example/debian" || m.From != "config" {
		t.Fatalf("configured: %+v %v", m, err)
	}
	if _, err := ResolveMirror(root, "-x", e); err == nil {
		t.Fatal("an option-like configured mirror was accepted")
	}
	pinned := e
	pinned.Mirror = "http://pinned.example/debian"
	if m, _ := ResolveMirror(root, "", pinned); m.URI != pinned.Mirror || m.From != "catalog" {
		t.Fatalf("pinned: %+v", m)
	}
	if m, _ := ResolveMirror(root, "", e); m.URI != "http://host.example/debian" || m.From != "host" {
		t.Fatalf("host: %+v", m)
	}
	other := e
	other.Suite = "trixie"
	if m, _ := ResolveMirror(root, "", other); m.URI != DefaultDebianMirror || m.From != "default" {
		t.Fatalf("fallback: %+v", m)
	}
	// A malformed sources file is an error, not a silent fallback.
	writeFile(t, filepath.Join(root, "etc/apt/sources.list.d/bad.sources"), "Types: deb\nnot a field\n")
	if _, err := ResolveMirror(root, "", e); err == nil {
		t.Fatal("malformed host sources were accepted")
	}
}

// Every resolved mirror comes with a keyring: the Signed-By file of a host
// source for the same archive, else Debian's archive keyring; none is an
// error naming the fix.
func TestResolveMirrorKeyring(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/apt/sources.list.d/debian.sources"), `Types: deb
URIs: http://host.example/debian/
Suites: bookworm
Components: main
Signed-By: /etc/apt/keyrings/host.gpg

Types: deb
URIs: http://inline.example/debian
Suites: trixie
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 x
 -----END PGP PUBLIC KEY BLOCK-----
`)
	writeFile(t, filepath.Join(root, "etc/apt/keyrings/host.gpg"), "host key")
	e := Entry{Name: "d", Kind: KindDebootstrap, Suite: "bookworm"}
	hostKey, defKey := filepath.Join(root, "etc/apt/keyrings/host.gpg"), filepath.Join(root, DefaultKeyring)

	// No default keyring yet: only archives with their own keyring resolve.
	if m, err := ResolveMirror(root, "", e); err != nil || m.Keyring != hostKey {
		t.Fatalf("host mirror: %+v %v", m, err)
	}
	if m, err := ResolveMirror(root, "http://host.example/debian", e); err != nil || m.From != "config" || m.Keyring != hostKey {
		t.Fatalf("configured mirror the host lists: %+v %v", m, err)
	}
	for _, configured := range []string{"http://other.example/debian", "http://inline.example/debian"} {
		if m, err := ResolveMirror(root, configured, e); !errors.Is(err, ErrNoKeyring) || !strings.Contains(err.Error(), "apt-get install debian-archive-keyring") {
			t.Fatalf("%s without a keyring: %+v %v", configured, m, err)
		}
	}
	// An empty keyring file is no keyring.
	writeFile(t, defKey, "")
	if _, err := ResolveMirror(root, "http://other.example/debian", e); !errors.Is(err, ErrNoKeyring) {
		t.Fatalf("empty default keyring accepted: %v", err)
	}
	writeFile(t, defKey, "debian key")
	for _, configured := range []string{"http://other.example/debian", "http://inline.example/debian"} {
		if m, err := ResolveMirror(root, configured, e); err != nil || m.Keyring != defKey {
			t.Fatalf("%s: %+v %v, want the default keyring", configured, m, err)
		}
	}
	other := e
	other.Suite = "sid"
	if m, err := ResolveMirror(root, "", other); err != nil || m.From != "default" || m.Keyring != defKey {
		t.Fatalf("default mirror: %+v %v", m, err)
	}
}
