package imagecat

import (
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

// Mirror is a Debian archive to bootstrap from.
type Mirror struct {
	URI string
	// Keyring verifies the archive's Release file (the source's Signed-By);
	// empty means debootstrap's default keyring.
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
		if kr := s.SignedBy; kr != "" && !strings.Contains(kr, "\n") && filepath.IsAbs(kr) {
			p := filepath.Join(root, kr)
			if _, err := os.Stat(p); err == nil {
				m.Keyring = p
			}
		}
		return m, true, nil
	}
	return Mirror{}, false, nil
}

// ResolveMirror picks the archive for a debootstrap entry: configured (if
// set), else the entry's pinned mirror, else the host's apt mirror for the
// suite, else DefaultDebianMirror.
func ResolveMirror(hostRoot, configured string, e Entry) (Mirror, error) {
	switch {
	case configured != "":
		if err := validateMirror(configured); err != nil {
			return Mirror{}, err
		}
		return Mirror{URI: strings.TrimRight(configured, "/"), From: "config"}, nil
	case e.Mirror != "":
		return Mirror{URI: strings.TrimRight(e.Mirror, "/"), From: "catalog"}, nil
	}
	if hostRoot == "" {
		hostRoot = "/"
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
