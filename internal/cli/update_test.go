package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/updater"
)

const testManifest = `{"schema": 1, "latest": "v0.9.0", "releases": [
 {"version": "v0.9.0", "tarball": "v0.9.0/banger_v0.9.0_linux_amd64.tar.gz",
  "sha256sums": "v0.9.0/SHA256SUMS", "signature": "v0.9.0/SHA256SUMS.sig",
  "published_at": "2026-05-01T12:00:00Z"}]}`

// runCLI runs the command tree with a scratch system root and no terminal.
func runCLI(t *testing.T, env map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	e := Env{
		Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr,
		Getenv:     func(k string) string { return env[k] },
		Executable: filepath.Join(t.TempDir(), "banger"),
	}
	code := Execute(context.Background(), e, args)
	return stdout.String(), stderr.String(), code
}

// testReleasedAt is the date v0.9.0's signed SHA256SUMS carries.
var testReleasedAt = time.Date(2026, 4, 30, 8, 0, 0, 0, time.UTC)

// manifestServer serves testManifest and v0.9.0's SHA256SUMS, signed with a
// fresh key, from 127.0.0.1. It returns the manifest URL and the public key
// file for --pubkey-file.
func manifestServer(t *testing.T) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubFile := filepath.Join(t.TempDir(), "release.pub")
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	sums := []byte(updater.SumsHeader(testReleasedAt) + strings.Repeat("0", 64) + "  " + updater.TarballName("v0.9.0") + "\n")
	digest := sha256.Sum256(sums)
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"/manifest.json":         []byte(testManifest),
		"/v0.9.0/SHA256SUMS":     sums,
		"/v0.9.0/SHA256SUMS.sig": []byte(base64.StdEncoding.EncodeToString(sig)),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/manifest.json", pubFile
}

func TestUpdateCheckWithoutInstallUsesThisBuild(t *testing.T) {
	url, pub := manifestServer(t)
	env := map[string]string{paths.EnvSystemRoot: t.TempDir(), "HOME": t.TempDir()}
	out, errOut, code := runCLI(t, env, "update", "--check", "--manifest-url", url, "--pubkey-file", pub)
	if code != 0 || !strings.Contains(out, "installed: v0.0.0-dev") || !strings.Contains(out, "update available: v0.9.0") ||
		!strings.Contains(out, "newest signed release: v0.9.0, released 2026-04-30T08:00:00Z") {
		t.Fatalf("update --check: exit %d\n%s%s", code, out, errOut)
	}
}

func TestUpdateToUnknownVersionFailsNamingIt(t *testing.T) {
	url, pub := manifestServer(t)
	root := t.TempDir()
	env := map[string]string{paths.EnvSystemRoot: root, "HOME": t.TempDir()}
	out, errOut, code := runCLI(t, env, "update", "--check", "--to", "v9.9.9", "--manifest-url", url, "--pubkey-file", pub)
	if code == 0 || !strings.Contains(errOut, "v9.9.9") || !strings.Contains(errOut, "v0.9.0") {
		t.Fatalf("update --to v9.9.9: exit %d\n%s%s", code, out, errOut)
	}
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Fatalf("a failed check wrote under the system root: %v", ents)
	}
}

// Without a terminal and without --yes the update refuses at once rather
// than wait on stdin (CI has none).
func TestUpdateWithoutTerminalNeedsYes(t *testing.T) {
	if os.Geteuid() != 0 {
		out, errOut, code := runCLI(t, map[string]string{"HOME": t.TempDir()}, "update")
		if code == 0 || !strings.Contains(errOut, "must run as root") {
			t.Fatalf("update as a user: exit %d\n%s%s", code, out, errOut)
		}
		return
	}
	url, pub := manifestServer(t)
	root := t.TempDir()
	env := map[string]string{paths.EnvSystemRoot: root, "HOME": t.TempDir()}
	out, errOut, code := runCLI(t, env, "update", "--manifest-url", url, "--pubkey-file", pub)
	if code == 0 || !strings.Contains(errOut, "pass --yes") || !strings.Contains(out, "update v0.0.0-dev → v0.9.0") {
		t.Fatalf("update without --yes: exit %d\n%s%s", code, out, errOut)
	}
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Fatalf("a refused update wrote under the system root: %v", ents)
	}
}

func TestUpdateTestFlagsAreHidden(t *testing.T) {
	out, _, code := runCLI(t, map[string]string{"HOME": t.TempDir()}, "update", "--help")
	if code != 0 || !strings.Contains(out, "--dry-run") {
		t.Fatalf("update --help: exit %d\n%s", code, out)
	}
	for _, hidden := range []string{"--manifest-url", "--pubkey-file", "--test-kill-after-swap"} {
		if strings.Contains(out, hidden) {
			t.Fatalf("update --help shows the test flag %s", hidden)
		}
	}
}

func TestUpdateCheckAndDryRunExclude(t *testing.T) {
	_, errOut, code := runCLI(t, map[string]string{"HOME": t.TempDir()}, "update", "--check", "--dry-run")
	if code != 2 || !strings.Contains(errOut, "exclude") {
		t.Fatalf("--check --dry-run: exit %d %s", code, errOut)
	}
}

func TestSystemInstallNeedsAnOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		_, errOut, code := runCLI(t, map[string]string{"HOME": t.TempDir()}, "system", "install", "--owner", "nobody")
		if code == 0 || !strings.Contains(errOut, "must run as root") {
			t.Fatalf("system install as a user: exit %d %s", code, errOut)
		}
		return
	}
	root := t.TempDir()
	_, errOut, code := runCLI(t, map[string]string{paths.EnvSystemRoot: root, "HOME": t.TempDir()}, "system", "install")
	if code != 2 || !strings.Contains(errOut, "--owner") {
		t.Fatalf("system install without an owner: exit %d %s", code, errOut)
	}
	_, errOut, code = runCLI(t, map[string]string{paths.EnvSystemRoot: root, "HOME": t.TempDir(), "SUDO_USER": "root"}, "system", "install")
	if code != 2 || !strings.Contains(errOut, "not root") {
		t.Fatalf("system install for root: exit %d %s", code, errOut)
	}
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Fatalf("a refused install wrote under the system root: %v", ents)
	}
}

// A system install applies to root and its owner only, and not when
// BANGER_HOME points at another instance.
func TestSystemInstallSelection(t *testing.T) {
	root := t.TempDir()
	sys := paths.System{Root: root}
	if err := os.MkdirAll(filepath.Dir(sys.InstallMeta()), 0o755); err != nil {
		t.Fatal(err)
	}
	meta := "owner_user = 'someone'\nowner_uid = " + strconv.Itoa(os.Geteuid()+1) + "\nowner_gid = 1\nowner_home = '/home/someone'\nversion = 'v0.1.0'\n"
	if err := os.WriteFile(sys.InstallMeta(), []byte(meta), 0o644); err != nil {
		t.Fatal(err)
	}
	mk := func(env map[string]string) *app {
		return &app{env: Env{Getenv: func(k string) string { return env[k] }}}
	}
	_, _, ok, err := mk(map[string]string{paths.EnvSystemRoot: root}).systemInstall()
	if err != nil {
		t.Fatal(err)
	}
	if want := os.Geteuid() == 0; ok != want {
		t.Fatalf("system install applies to euid %d: %v, want %v", os.Geteuid(), ok, want)
	}
	if _, _, ok, _ := mk(map[string]string{paths.EnvSystemRoot: root, paths.EnvHome: t.TempDir()}).systemInstall(); ok {
		t.Fatal("a system install was chosen although BANGER_HOME names another instance")
	}
	if _, _, ok, _ := mk(map[string]string{paths.EnvSystemRoot: t.TempDir()}).systemInstall(); ok {
		t.Fatal("a system install was found where there is none")
	}
	if p, ok := mk(map[string]string{paths.EnvSystemRoot: root, paths.EnvHome: sys.Home()}).systemPaths(); ok != (os.Geteuid() == 0) || (ok && p.Socket() != sys.User().Socket()) {
		t.Fatalf("systemPaths: %v %+v", ok, p)
	}
}
