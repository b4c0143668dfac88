package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/testutil"
	"github.com/bangerdev/banger/internal/updater"
)

func dummyBins(t *testing.T, tag string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range updater.ReleaseEntries {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\necho "+n+" "+tag+"\n"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func mkrelease(t *testing.T, args ...string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if rc := run(ctx, args, &out, &errOut); rc != 0 {
		t.Fatalf("mkrelease %v: exit %d: %s", args, rc, errOut.String())
	}
}

// installFromServed serves out on 127.0.0.1 and runs the updater's own
// fetch, verification and staging against it.
func installFromServed(t *testing.T, out, version string) updater.StagedRelease {
	t.Helper()
	srv := httptest.NewServer(http.FileServer(http.Dir(out)))
	defer srv.Close()
	ctx := context.Background()
	m, err := updater.FetchManifestFrom(ctx, nil, srv.URL+"/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	rel, err := m.Find(version)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(filepath.Join(out, "release.pub"))
	if err != nil {
		t.Fatal(err)
	}
	staging := filepath.Join(t.TempDir(), "staging")
	dl, err := updater.DownloadRelease(ctx, nil, rel, pub, staging, nil)
	if err != nil {
		t.Fatal(err)
	}
	sr, err := updater.StageTarball(dl.Tarball, staging)
	if err != nil {
		t.Fatal(err)
	}
	return sr
}

func TestReleaseFromPrebuiltBinariesVerifies(t *testing.T) {
	out := filepath.Join(t.TempDir(), "releases")
	mkrelease(t, "--version", "v0.2.0", "--out", out, "--bin-dir", dummyBins(t, "two"), "--commit", "abc", "--built-at", "2026-05-01T00:00:00Z")
	mkrelease(t, "--version", "v0.smoke.0", "--out", out, "--bin-dir", dummyBins(t, "smoke"), "--latest=false")

	sr := installFromServed(t, out, "v0.2.0")
	if b, _ := os.ReadFile(sr.Bangerd); string(b) != "#!/bin/sh\necho bangerd two\n" {
		t.Fatalf("staged bangerd = %q", b)
	}
	sr = installFromServed(t, out, "v0.smoke.0")
	if b, _ := os.ReadFile(sr.Banger); string(b) != "#!/bin/sh\necho banger smoke\n" {
		t.Fatalf("staged banger = %q", b)
	}

	data, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := updater.ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	if m.Latest != "v0.2.0" || len(m.Releases) != 2 {
		t.Fatalf("manifest latest %s with %v", m.Latest, m.Versions())
	}
	// The development private key is kept outside the served directory.
	if _, err := os.Stat(out + ".key.pem"); err != nil {
		t.Fatalf("development key not beside --out: %v", err)
	}
	filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
		if b, _ := os.ReadFile(p); bytes.Contains(b, []byte("PRIVATE KEY")) {
			t.Errorf("private key material in served file %s", p)
		}
		return nil
	})
	// Rebuilding a version replaces its entry instead of duplicating it.
	mkrelease(t, "--version", "v0.2.0", "--out", out, "--bin-dir", dummyBins(t, "two-again"))
	data, _ = os.ReadFile(filepath.Join(out, "manifest.json"))
	if m, err = updater.ParseManifest(data); err != nil || len(m.Releases) != 2 {
		t.Fatalf("after rebuild: %v, %v", m, err)
	}
	sr = installFromServed(t, out, "v0.2.0")
	if b, _ := os.ReadFile(sr.Agent); !strings.Contains(string(b), "two-again") {
		t.Fatalf("rebuilt agent = %q", b)
	}
}

func TestReleaseSignedWithOpenSSLKey(t *testing.T) {
	openssl := testutil.RequireBinary(t, "openssl")
	dir := t.TempDir()
	key := filepath.Join(dir, "key.pem")
	// Without -noout: the EC PARAMETERS block comes first, as maintainers'
	// keys made by the documented command do.
	if out, err := exec.Command(openssl, "ecparam", "-name", "prime256v1", "-genkey", "-out", key).CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	pubFile := filepath.Join(dir, "pub.pem")
	if out, err := exec.Command(openssl, "ec", "-in", key, "-pubout", "-out", pubFile).CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "releases")
	mkrelease(t, "--version", "v1.0.0", "--out", out, "--key", key, "--bin-dir", dummyBins(t, "one"),
		"--base-url", "http://127.0.0.1:1/ignored", "--released-at", "2026-03-04T05:06:07Z")

	sums, _ := os.ReadFile(filepath.Join(out, "v1.0.0", "SHA256SUMS"))
	// The release date is part of the signed document.
	if at, ok, err := updater.ReleasedAt(sums); err != nil || !ok || at.Format(time.RFC3339) != "2026-03-04T05:06:07Z" {
		t.Fatalf("SHA256SUMS release date: %v %v %v\n%s", at, ok, err, sums)
	}
	sig, _ := os.ReadFile(filepath.Join(out, "v1.0.0", "SHA256SUMS.sig"))
	pub, _ := os.ReadFile(pubFile)
	if err := updater.VerifyBlobSignatureWithKey(pub, sums, sig); err != nil {
		t.Fatalf("signature does not verify with the openssl public key: %v", err)
	}
	// openssl agrees too.
	der := filepath.Join(dir, "sig.der")
	if o, err := exec.Command("sh", "-c", `base64 -d < "$0" > "$1"`, filepath.Join(out, "v1.0.0", "SHA256SUMS.sig"), der).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, o)
	}
	if o, err := exec.Command(openssl, "dgst", "-sha256", "-verify", pubFile, "-signature", der, filepath.Join(out, "v1.0.0", "SHA256SUMS")).CombinedOutput(); err != nil {
		t.Fatalf("openssl rejects the signature: %v %s", err, o)
	}
	if _, err := os.Stat(out + ".key.pem"); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a development key was generated although --key was given")
	}
	data, _ := os.ReadFile(filepath.Join(out, "manifest.json"))
	if !strings.Contains(string(data), `"http://127.0.0.1:1/ignored/v1.0.0/banger_v1.0.0_linux_amd64.tar.gz"`) {
		t.Fatalf("manifest does not use --base-url:\n%s", data)
	}
}

func TestUsageErrors(t *testing.T) {
	var out, errOut bytes.Buffer
	ctx := context.Background()
	if rc := run(ctx, []string{"--out", t.TempDir()}, &out, &errOut); rc != 2 {
		t.Fatalf("missing --version: exit %d", rc)
	}
	if rc := run(ctx, []string{"--version", "v1/../x", "--out", t.TempDir()}, &out, &errOut); rc != 2 {
		t.Fatalf("bad version: exit %d", rc)
	}
	missing := t.TempDir()
	if rc := run(ctx, []string{"--version", "v1.0.0", "--out", t.TempDir(), "--bin-dir", missing}, &out, &errOut); rc != 1 {
		t.Fatalf("missing binaries: exit %d", rc)
	}
}

// TestBuildStampsVersion builds the three commands of a tiny module that
// mirrors banger's buildinfo package, and checks the stamped version is what
// the updater reads back from `bangerd --version`.
func TestBuildStampsVersion(t *testing.T) {
	testutil.RequireBinary(t, "go")
	src := t.TempDir()
	files := map[string]string{
		"go.mod":                        "module github.com/bangerdev/banger\n\ngo 1.22\n",
		"internal/buildinfo/version.go": "package buildinfo\n\nvar (\n\tVersion = \"dev\"\n\tCommit = \"unknown\"\n\tBuiltAt = \"unknown\"\n)\n",
	}
	for _, n := range updater.ReleaseEntries {
		files["cmd/"+n+"/main.go"] = `package main

import (
	"fmt"

	"github.com/bangerdev/banger/internal/buildinfo"
)

func main() {
	fmt.Printf("` + n + ` %s (commit %s, built %s, go)\n", buildinfo.Version, buildinfo.Commit, buildinfo.BuiltAt)
}
`
	}
	for p, body := range files {
		full := filepath.Join(src, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("GOFLAGS", "-mod=mod")
	out := filepath.Join(t.TempDir(), "releases")
	mkrelease(t, "--version", "v0.3.0", "--out", out, "--src", src, "--commit", "feedbeef", "--built-at", "2026-05-03T04:05:06Z")
	sr := installFromServed(t, out, "v0.3.0")
	got, err := exec.Command(sr.Bangerd, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "bangerd v0.3.0 (commit feedbeef, built 2026-05-03T04:05:06Z, go)\n"; string(got) != want {
		t.Fatalf("built bangerd says %q, want %q", got, want)
	}
}
