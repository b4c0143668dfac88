package imagecat

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bangerdev/banger/internal/debarchive"
)

// DefaultDebianMirror is used when neither the configuration nor the host's
// apt sources name an archive serving the suite (a non-Debian host).
const DefaultDebianMirror = "http://deb.debian.org/debian"

// DefaultKeyring is Debian's archive keyring (package
// debian-archive-keyring), used for a mirror the host's apt sources do not
// list with a keyring of their own.
const DefaultKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// ErrNoKeyring means no keyring is there to verify the archive with: a
// build refuses rather than install unsigned packages as root.
var ErrNoKeyring = errors.New("no keyring to verify the archive")

// Mirror is a Debian archive to bootstrap from.
type Mirror struct {
	URI string
	// Keyring verifies the archive's Release file: the host source's
	// Signed-By file, else DefaultKeyring. ResolveMirror always sets it; a
	// build never runs without one.
	Keyring string
	// From says where the mirror came from: "config", "catalog", "host" or
	// "default".
	From string
}

// HostMirror finds the archive the host's apt sources (under root, normally
// "/") use for suite: the first binary source listing exactly that suite
// (so "bookworm", not "bookworm-updates"). ok is false when none does.
func HostMirror(root, suite string) (m Mirror, ok bool, err error) {
	srcs, err := debarchive.ReadHostSources(root)
	if err != nil {
		return Mirror{}, false, fmt.Errorf("read host apt sources: %w", err)
	}
	for _, s := range srcs {
		if !slices.Contains(s.Suites, suite) {
			continue
		}
		if len(s.Architectures) > 0 && !slices.Contains(s.Architectures, "amd64") {
			continue
		}
		if validateMirror(s.URI) != nil {
			continue
		}
		m = Mirror{URI: s.URI, From: "host"}
		// Signed-By may be an inline key block; debootstrap needs a file.
		if p, ok := keyringFile(root, s.SignedBy); ok {
			m.Keyring = p
		}
		return m, true, nil
	}
	return Mirror{}, false, nil
}

// ResolveMirror picks the archive for a debootstrap entry: configured (if
// set), else the entry's pinned mirror, else the host's apt mirror for the
// suite, else DefaultDebianMirror; and the keyring that verifies it (see
// Mirror.Keyring). With no keyring it fails with ErrNoKeyring.
func ResolveMirror(hostRoot, configured string, e Entry) (Mirror, error) {
	if hostRoot == "" {
		hostRoot = "/"
	}
	m, err := resolveMirrorURI(hostRoot, configured, e)
	if err != nil {
		return Mirror{}, err
	}
	if m.Keyring == "" {
		if m.Keyring, err = keyringFor(hostRoot, m.URI); err != nil {
			return Mirror{}, err
		}
	}
	return m, nil
}

func resolveMirrorURI(hostRoot, configured string, e Entry) (Mirror, error) {
	switch {
	case configured != "":
		if err := validateMirror(configured); err != nil {
			return Mirror{}, err
		}
		return Mirror{URI: strings.TrimRight(configured, "/"), From: "config"}, nil
	case e.Mirror != "":
		return Mirror{URI: strings.TrimRight(e.Mirror, "/"), From: "catalog"}, nil
	}
	m, ok, err := HostMirror(hostRoot, e.Suite)
	if err != nil {
		return Mirror{}, err
	}
	if ok {
		return m, nil
	}
	return Mirror{URI: DefaultDebianMirror, From: "default"}, nil
}

// keyringFor finds the keyring for uri: the Signed-By file of a host apt
// source for the same archive (as the kernel archive is verified), else
// Debian's archive keyring, both under root.
func keyringFor(root, uri string) (string, error) {
	srcs, err := debarchive.ReadHostSources(root)
	if err != nil {
		return "", fmt.Errorf("read host apt sources: %w", err)
	}
	for _, s := range srcs {
		if strings.TrimRight(s.URI, "/") != uri {
			continue
		}
		if p, ok := keyringFile(root, s.SignedBy); ok {
			return p, nil
		}
	}
	if p, ok := keyringFile(root, DefaultKeyring); ok {
		return p, nil
	}
	return "", fmt.Errorf("%w %s: %s is missing and the host's apt sources name no keyring file for it; install it (apt-get install debian-archive-keyring) and build again",
		ErrNoKeyring, uri, filepath.Join(root, DefaultKeyring))
}

// keyringFile resolves a Signed-By value naming one keyring file (not an
// inline key block or fingerprints, which debootstrap cannot take) to a
// non-empty regular file under root.
func keyringFile(root, signedBy string) (string, bool) {
	if signedBy == "" || strings.ContainsAny(signedBy, "\n ,") || !filepath.IsAbs(signedBy) {
		return "", false
	}
	p := filepath.Join(root, signedBy)
	fi, err := os.Stat(p)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
		return "", false
	}
	return p, true
}

// validateMirror accepts http(s) and file URLs only: the mirror reaches
// debootstrap's argv, which must not take it for an option.
func validateMirror(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("invalid mirror %q: %w", s, err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return fmt.Errorf("invalid mirror %q: no host", s)
		}
	case "file":
		if u.Path == "" {
			return fmt.Errorf("invalid mirror %q: no path", s)
		}
	default:
		return fmt.Errorf("invalid mirror %q: want an http, https or file URL", s)
	}
	if strings.ContainsAny(s, " \t\n") {
		return fmt.Errorf("invalid mirror %q: contains whitespace", s)
	}
	return nil
}
