package debarchive

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func putFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReadHostSources(t *testing.T) {
	root := t.TempDir()
	putFile(t, filepath.Join(root, "etc/apt/sources.list.d/debian.sources"), `Types: deb deb-src
# a comment between fields
URIs: http://deb.debian.org/debian/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://off.example/debian
Suites: bookworm
Components: main
Enabled: no
`)
	putFile(t, filepath.Join(root, "etc/apt/sources.list.d/node.sources.disabled-by-farm"),
		"Types: deb\nURIs: http://disabled.example\nSuites: nodistro\nComponents: main\n")
	putFile(t, filepath.Join(root, "etc/apt/sources.list.d/gcloud.list.disabled-by-farm"),
		"deb http://disabled.example/apt cloud main\n")
	putFile(t, filepath.Join(root, "etc/apt/sources.list"), `# legacy
deb [arch=amd64 signed-by=/etc/apt/keyrings/x.gpg] http://legacy.example/debian bookworm main non-free
deb-src http://legacy.example/debian bookworm main
deb http://plain.example/debian bookworm-backports main # trailing comment
`)
	got, err := ReadHostSources(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []Source{
		{URI: "http://legacy.example/debian", Suites: []string{"bookworm"}, Components: []string{"main", "non-free"}, SignedBy: "/etc/apt/keyrings/x.gpg", Architectures: []string{"amd64"}},
		{URI: "http://plain.example/debian", Suites: []string{"bookworm-backports"}, Components: []string{"main"}},
		{URI: "http://deb.debian.org/debian", Suites: []string{"bookworm", "bookworm-updates"}, Components: []string{"main", "contrib"}, SignedBy: "/usr/share/keyrings/debian-archive-keyring.gpg"},
		{URI: "http://deb.debian.org/debian-security", Suites: []string{"bookworm-security"}, Components: []string{"main"}, SignedBy: "/usr/share/keyrings/debian-archive-keyring.gpg"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d sources: %+v", len(got), got)
	}
	for i := range want {
		g := got[i]
		if g.Architectures == nil {
			g.Architectures = nil
		}
		if !reflect.DeepEqual(g.URI, want[i].URI) || !reflect.DeepEqual(g.Suites, want[i].Suites) ||
			!reflect.DeepEqual(g.Components, want[i].Components) || g.SignedBy != want[i].SignedBy ||
			len(g.Architectures) != len(want[i].Architectures) {
			t.Errorf("source %d:\n got %+v\nwant %+v", i, g, want[i])
		}
	}

	m := WithMirror(got, "http://mirror.example/debian/", "")
	if m[2].URI != "http://mirror.example/debian" || m[0].URI != "http://mirror.example/debian" {
		t.Errorf("mirror did not replace the main URIs: %+v", m)
	}
	if m[3].URI != "http://deb.debian.org/debian-security" {
		t.Errorf("security source changed without a security mirror: %s", m[3].URI)
	}
	if got[2].URI != "http://deb.debian.org/debian" {
		t.Errorf("WithMirror modified its input")
	}
	m = WithMirror(got, "", "http://sec.example/ds")
	if m[3].URI != "http://sec.example/ds" || m[2].URI != "http://deb.debian.org/debian" {
		t.Errorf("security mirror: %+v", m)
	}
}

func TestReadHostSourcesRejectsMalformed(t *testing.T) {
	root := t.TempDir()
	putFile(t, filepath.Join(root, "etc/apt/sources.list.d/bad.sources"), "Types: deb\nthis line has no colon\n")
	if _, err := ReadHostSources(root); err == nil {
		t.Fatal("expected an error for a malformed .sources file")
	}
	root = t.TempDir()
	putFile(t, filepath.Join(root, "etc/apt/sources.list"), "deb http://only-a-uri.example\n")
	if _, err := ReadHostSources(root); err == nil {
		t.Fatal("expected an error for a one-line source without a suite")
	}
}

// TestReadThisHostSources reads the machine's own apt configuration: it must
// parse, and (on the Debian hosts banger supports) list a Debian suite.
func TestReadThisHostSources(t *testing.T) {
	srcs, err := ReadHostSources("/")
	if err != nil {
		t.Fatalf("read this host's apt sources: %v", err)
	}
	for _, s := range srcs {
		if len(s.Suites) == 0 || s.URI == "" {
			t.Errorf("incomplete source %+v", s)
		}
	}
}
