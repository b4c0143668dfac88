package updater

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/download"
)

// DefaultManifestURL is where released banger binaries look for updates.
const DefaultManifestURL = "https://github.com/bangerdev/banger/releases/latest/download/manifest.json"

// ManifestSchema is the only manifest schema this updater understands.
const ManifestSchema = 1

// Size caps for the small documents of a release.
const (
	maxManifestBytes  = 1 << 20
	maxSumsBytes      = 64 << 10
	maxSignatureBytes = 4 << 10
	maxTarballBytes   = 512 << 20
)

// Sentinel errors callers and tests match with errors.Is.
var (
	ErrUnknownVersion    = errors.New("version not found in the release manifest")
	ErrUnsupportedSchema = errors.New("unsupported release manifest schema")
	ErrInvalidManifest   = errors.New("invalid release manifest")
)

// Manifest lists the releases an updater may install (see doc.go for the
// format). It is not signed: it only points at artefacts, and every artefact
// is checked against the signed SHA256SUMS of its version, whose tarball
// name carries the version, so a manifest cannot substitute one release for
// another.
type Manifest struct {
	Schema   int       `json:"schema"`
	Latest   string    `json:"latest"`
	Releases []Release `json:"releases"`

	base *url.URL // where the manifest came from: relative URLs resolve against it
}

// Release is one version's artefacts. URLs may be absolute (http or https)
// or relative to the manifest's URL.
type Release struct {
	Version     string    `json:"version"`
	Tarball     string    `json:"tarball"`
	SHA256Sums  string    `json:"sha256sums"`
	Signature   string    `json:"signature"`
	PublishedAt time.Time `json:"published_at"`
}

// TarballName is the file name of version's release tarball; SHA256SUMS
// must list the tarball under exactly this name.
func TarballName(version string) string { return "banger_" + version + "_linux_amd64.tar.gz" }

// FetchManifest fetches the manifest from DefaultManifestURL.
func FetchManifest(ctx context.Context, client *http.Client) (*Manifest, error) {
	return FetchManifestFrom(ctx, client, DefaultManifestURL)
}

// FetchManifestFrom fetches (size-capped), parses and validates the
// manifest at manifestURL.
func FetchManifestFrom(ctx context.Context, client *http.Client, manifestURL string) (*Manifest, error) {
	base, err := parseHTTPURL(manifestURL)
	if err != nil {
		return nil, fmt.Errorf("fetch release manifest: %w", err)
	}
	data, err := download.GetBounded(ctx, client, manifestURL, maxManifestBytes)
	if err != nil {
		return nil, fmt.Errorf("fetch release manifest: %w", err)
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("release manifest %s: %w", manifestURL, err)
	}
	m.base = base
	return m, nil
}

// ParseManifest decodes and validates a manifest document.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidManifest, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON document", ErrInvalidManifest)
	}
	if m.Schema != ManifestSchema {
		return nil, fmt.Errorf("%w %d (this banger reads schema %d: update banger by reinstalling it)", ErrUnsupportedSchema, m.Schema, ManifestSchema)
	}
	seen := map[string]bool{}
	for _, r := range m.Releases {
		if !ValidVersion(r.Version) {
			return nil, fmt.Errorf("%w: release version %q", ErrInvalidManifest, r.Version)
		}
		if seen[r.Version] {
			return nil, fmt.Errorf("%w: release %s listed twice", ErrInvalidManifest, r.Version)
		}
		seen[r.Version] = true
		if r.Tarball == "" || r.SHA256Sums == "" || r.Signature == "" {
			return nil, fmt.Errorf("%w: release %s lacks a tarball, sha256sums or signature URL", ErrInvalidManifest, r.Version)
		}
	}
	if !seen[m.Latest] {
		return nil, fmt.Errorf("%w: latest %q is not among the releases", ErrInvalidManifest, m.Latest)
	}
	return &m, nil
}

// Find returns the release named version, or ErrUnknownVersion.
func (m *Manifest) Find(version string) (Release, error) {
	for _, r := range m.Releases {
		if r.Version == version {
			return m.resolve(r)
		}
	}
	return Release{}, fmt.Errorf("%s: %w", version, ErrUnknownVersion)
}

// Has reports whether the manifest lists version.
func (m *Manifest) Has(version string) bool {
	for _, r := range m.Releases {
		if r.Version == version {
			return true
		}
	}
	return false
}

// Versions lists the manifest's versions in manifest order.
func (m *Manifest) Versions() []string {
	out := make([]string, len(m.Releases))
	for i, r := range m.Releases {
		out[i] = r.Version
	}
	return out
}

// resolve makes r's URLs absolute against the manifest URL and checks that
// they are http(s) and that the tarball carries the release's name.
func (m *Manifest) resolve(r Release) (Release, error) {
	for _, u := range []*string{&r.Tarball, &r.SHA256Sums, &r.Signature} {
		ref, err := url.Parse(*u)
		if err != nil {
			return Release{}, fmt.Errorf("%w: release %s: url %q: %w", ErrInvalidManifest, r.Version, *u, err)
		}
		if m.base != nil {
			ref = m.base.ResolveReference(ref)
		}
		abs, err := parseHTTPURL(ref.String())
		if err != nil {
			return Release{}, fmt.Errorf("%w: release %s: %w", ErrInvalidManifest, r.Version, err)
		}
		*u = abs.String()
	}
	if name := tarballBase(r.Tarball); name != TarballName(r.Version) {
		return Release{}, fmt.Errorf("%w: release %s: tarball is named %q, want %q", ErrInvalidManifest, r.Version, name, TarballName(r.Version))
	}
	return r, nil
}

func tarballBase(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	return path.Base(u.Path)
}

// ErrInsecureURL reports a manifest or artefact URL that is not https and
// not on a loopback host.
var ErrInsecureURL = errors.New("only https URLs are allowed (plain http only on a loopback host: 127.0.0.0/8, ::1, localhost)")

func parseHTTPURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("url %q: %w", raw, err)
	}
	if err := CheckURL(u); err != nil {
		return nil, err
	}
	return u, nil
}

// CheckURL enforces the transport rule of every updater request: https, or
// plain http to a loopback host (local test servers). The manifest is not
// signed, so over plain http anyone on the path could hide new releases
// from the updater; https at least binds it to the release host.
func CheckURL(u *url.URL) error {
	if u.Host == "" || u.User != nil {
		return fmt.Errorf("url %q: want an absolute https URL without credentials", u.Redacted())
	}
	switch {
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && isLoopbackHost(u.Hostname()):
		return nil
	}
	return fmt.Errorf("url %q: %w", u.Redacted(), ErrInsecureURL)
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// SecureClient returns a copy of c (nil: a default client) that refuses
// redirects breaking CheckURL: an https manifest must not bounce to plain
// http elsewhere.
func SecureClient(c *http.Client) *http.Client {
	out := &http.Client{}
	if c != nil {
		*out = *c
	}
	prev := out.CheckRedirect
	out.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if err := CheckURL(req.URL); err != nil {
			return fmt.Errorf("redirect refused: %w", err)
		}
		if prev != nil {
			return prev(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return out
}
