// Command mkrelease builds a banger release the updater can install: the
// tarball of the four binaries, SHA256SUMS, its cosign-compatible
// signature, and a manifest.json that lists every release built into the
// same output directory.
//
//	go run ./tools/mkrelease --version v0.2.0 --out dist/releases [--key KEY.pem]
//	    [--base-url URL] [--bin-dir DIR | --banger P --bangerd P --agent P --helper P]
//
// Layout of --out (serve it as is, e.g. python3 -m http.server):
//
//	manifest.json
//	release.pub                       public key that verifies the signatures
//	<version>/banger_<version>_linux_amd64.tar.gz
//	<version>/SHA256SUMS               "# released: <RFC 3339>" line, then the hash
//	<version>/SHA256SUMS.sig
//
// Real releases are signed with the maintainers' key (--key; a PEM EC
// P-256 private key as `openssl ecparam -name prime256v1 -genkey` writes
// it, SEC1 or PKCS#8, unencrypted). Without --key a development key pair is
// generated once and reused: the private key goes beside --out, never into
// it (<out>.key.pem), and the public key into <out>/release.pub for
// `banger update --pubkey-file`.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/system"
	"github.com/bangerdev/banger/internal/updater"
)

const buildinfoPkg = "github.com/bangerdev/banger/internal/buildinfo"

func main() { os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)) }

type config struct {
	version, out, key, baseURL, binDir, src string
	banger, bangerd, agent, helper          string
	commit, builtAt                         string
	releasedAt                              string
	latest                                  bool
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mkrelease", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	fs.StringVar(&c.version, "version", "", "release version, e.g. v0.2.0 (required)")
	fs.StringVar(&c.out, "out", "", "output directory holding manifest.json and one directory per version (required)")
	fs.StringVar(&c.key, "key", "", "PEM EC P-256 private key to sign with (default: a generated development key beside --out)")
	fs.StringVar(&c.baseURL, "base-url", "", "absolute URL the release directories are served under (default: URLs relative to the manifest)")
	fs.StringVar(&c.binDir, "bin-dir", "", "take prebuilt banger, bangerd, banger-vsock-agent and banger-helper from this directory")
	fs.StringVar(&c.banger, "banger", "", "prebuilt banger binary")
	fs.StringVar(&c.bangerd, "bangerd", "", "prebuilt bangerd binary")
	fs.StringVar(&c.agent, "agent", "", "prebuilt banger-vsock-agent binary")
	fs.StringVar(&c.helper, "helper", "", "prebuilt banger-helper binary")
	fs.StringVar(&c.src, "src", ".", "module root to build the binaries from")
	fs.StringVar(&c.commit, "commit", "", "commit stamped into built binaries (default: git rev-parse)")
	fs.StringVar(&c.builtAt, "built-at", "", "build time stamped into built binaries, RFC 3339 (default: now)")
	fs.StringVar(&c.releasedAt, "released-at", "", "release date signed into SHA256SUMS, RFC 3339 (default: now)")
	fs.BoolVar(&c.latest, "latest", true, "make this version the manifest's latest")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if c.version == "" || c.out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "mkrelease: --version and --out are required (see --help)")
		return 2
	}
	if !updater.ValidVersion(c.version) {
		fmt.Fprintf(stderr, "mkrelease: %q is not a valid version (v followed by [0-9A-Za-z.+-])\n", c.version)
		return 2
	}
	if err := build(ctx, c, stdout); err != nil {
		fmt.Fprintf(stderr, "mkrelease: %v\n", err)
		return 1
	}
	return 0
}

func build(ctx context.Context, c config, stdout io.Writer) error {
	if c.builtAt == "" {
		c.builtAt = time.Now().UTC().Format(time.RFC3339)
	}
	builtAt, err := time.Parse(time.RFC3339, c.builtAt)
	if err != nil {
		return fmt.Errorf("--built-at %q: %w", c.builtAt, err)
	}
	releasedAt := time.Now().UTC().Truncate(time.Second)
	if c.releasedAt != "" {
		if releasedAt, err = time.Parse(time.RFC3339, c.releasedAt); err != nil {
			return fmt.Errorf("--released-at %q: %w", c.releasedAt, err)
		}
	}
	if c.commit == "" {
		c.commit = gitCommit(ctx, c.src)
	}
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", c.out, err)
	}
	key, err := signingKey(c)
	if err != nil {
		return err
	}

	bins, cleanup, err := binaries(ctx, c)
	if err != nil {
		return err
	}
	defer cleanup()

	tarball, err := makeTarball(bins, builtAt)
	if err != nil {
		return err
	}
	name := updater.TarballName(c.version)
	sum := sha256.Sum256(tarball)
	// The release date rides in the signed SHA256SUMS: `update --check`
	// reports it, so a manifest frozen on an old release shows its age.
	sums := []byte(updater.SumsHeader(releasedAt) + hex.EncodeToString(sum[:]) + "  " + name + "\n")
	digest := sha256.Sum256(sums)
	der, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return fmt.Errorf("sign SHA256SUMS: %w", err)
	}
	sig := []byte(base64.StdEncoding.EncodeToString(der))

	relDir := filepath.Join(c.out, c.version)
	if err := os.MkdirAll(relDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", relDir, err)
	}
	for file, data := range map[string][]byte{name: tarball, "SHA256SUMS": sums, "SHA256SUMS.sig": sig} {
		if err := system.WriteFileAtomic(filepath.Join(relDir, file), data, 0o644); err != nil {
			return err
		}
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return fmt.Errorf("encode public key: %w", err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	if err := system.WriteFileAtomic(filepath.Join(c.out, "release.pub"), pubPEM, 0o644); err != nil {
		return err
	}
	if err := updateManifest(c, name); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "release %s written to %s (sha256 %s)\n", c.version, relDir, hex.EncodeToString(sum[:]))
	return nil
}

// binaries returns the paths of the four binaries: prebuilt ones where
// given, the rest built from --src with the version stamped in.
func binaries(ctx context.Context, c config) (map[string]string, func(), error) {
	bins := map[string]string{
		updater.BangerName:  c.banger,
		updater.BangerdName: c.bangerd,
		updater.AgentName:   c.agent,
		updater.HelperName:  c.helper,
	}
	cleanup := func() {}
	for name, p := range bins {
		if p == "" && c.binDir != "" {
			bins[name] = filepath.Join(c.binDir, name)
		}
	}
	var tmp string
	for _, name := range updater.ReleaseEntries {
		if bins[name] != "" {
			continue
		}
		if tmp == "" {
			var err error
			if tmp, err = os.MkdirTemp("", "mkrelease-"); err != nil {
				return nil, cleanup, err
			}
			cleanup = func() { os.RemoveAll(tmp) }
		}
		out := filepath.Join(tmp, name)
		ldflags := fmt.Sprintf("-s -w -X %[1]s.Version=%[2]s -X %[1]s.Commit=%[3]s -X %[1]s.BuiltAt=%[4]s", buildinfoPkg, c.version, c.commit, c.builtAt)
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, "./cmd/"+name)
		cmd.Dir = c.src
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if msg, err := cmd.CombinedOutput(); err != nil {
			cleanup()
			return nil, func() {}, fmt.Errorf("build %s: %w\n%s", name, err, msg)
		}
		bins[name] = out
	}
	for name, p := range bins {
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
			cleanup()
			return nil, func() {}, fmt.Errorf("binary %s: %q is not a regular file", name, p)
		}
	}
	return bins, cleanup, nil
}

// makeTarball writes exactly the four entries, 0755, owned by root, with a
// fixed time: the same binaries give the same tarball.
func makeTarball(bins map[string]string, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, name := range updater.ReleaseEntries {
		data, err := os.ReadFile(bins[name])
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		hdr := &tar.Header{
			Name: name, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data)),
			ModTime: mtime.UTC().Truncate(time.Second), Uname: "root", Gname: "root", Format: tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar %s: %w", name, err)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("tar: %w", err)
	}
	if err := gz.Close(); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	return buf.Bytes(), nil
}

// signingKey loads --key, or the development key beside --out, generating
// it on first use.
func signingKey(c config) (*ecdsa.PrivateKey, error) {
	path := c.key
	if path == "" {
		path = filepath.Clean(c.out) + ".key.pem"
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return nil, fmt.Errorf("generate development key: %w", err)
			}
			der, err := x509.MarshalECPrivateKey(key)
			if err != nil {
				return nil, fmt.Errorf("encode development key: %w", err)
			}
			if err := system.WriteFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
				return nil, err
			}
			return key, nil
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	return parsePrivateKey(data)
}

// parsePrivateKey accepts SEC1 ("EC PRIVATE KEY", optionally after an "EC
// PARAMETERS" block as openssl ecparam writes it) or PKCS#8 P-256 keys.
func parsePrivateKey(data []byte) (*ecdsa.PrivateKey, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("signing key: no EC PRIVATE KEY or PRIVATE KEY PEM block")
		}
		var key any
		var err error
		switch block.Type {
		case "EC PARAMETERS":
			continue
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		default:
			return nil, fmt.Errorf("signing key: unsupported PEM block %q (encrypted keys are not supported)", block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("signing key: %w", err)
		}
		ec, ok := key.(*ecdsa.PrivateKey)
		if !ok || ec.Curve != elliptic.P256() {
			return nil, fmt.Errorf("signing key: want ECDSA P-256, got %T", key)
		}
		return ec, nil
	}
}

// updateManifest adds or replaces this version in <out>/manifest.json.
func updateManifest(c config, tarball string) error {
	path := filepath.Join(c.out, "manifest.json")
	m := &updater.Manifest{Schema: updater.ManifestSchema}
	if data, err := os.ReadFile(path); err == nil {
		if m, err = updater.ParseManifest(data); err != nil {
			return fmt.Errorf("existing %s: %w", path, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	ref := func(file string) string {
		rel := c.version + "/" + file
		if c.baseURL == "" {
			return rel
		}
		return strings.TrimRight(c.baseURL, "/") + "/" + rel
	}
	rel := updater.Release{
		Version: c.version, Tarball: ref(tarball), SHA256Sums: ref("SHA256SUMS"), Signature: ref("SHA256SUMS.sig"),
		PublishedAt: time.Now().UTC().Truncate(time.Second),
	}
	replaced := false
	for i := range m.Releases {
		if m.Releases[i].Version == c.version {
			m.Releases[i], replaced = rel, true
		}
	}
	if !replaced {
		m.Releases = append(m.Releases, rel)
	}
	if c.latest || m.Latest == "" {
		m.Latest = c.version
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	if _, err := updater.ParseManifest(data); err != nil {
		return fmt.Errorf("generated manifest is invalid: %w", err)
	}
	return system.WriteFileAtomic(path, append(data, '\n'), 0o644)
}

func gitCommit(ctx context.Context, dir string) string {
	cmd := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
