// Package imagecat is banger's image catalog and its local image builders:
// the named images banger knows (embedded catalog.json), debootstrap builds
// of Debian images, imports of a rootfs directory, tar or ext4 file, and the
// on-disk image store (<imagesDir>/<name>/rootfs.ext4 + image.json).
// OCI entries are resolved by internal/imagepull.
package imagecat

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Kinds of catalog entries.
const (
	KindDebootstrap = "debootstrap" // built locally with debootstrap (BuildDebootstrap)
	KindOCI         = "oci"         // pulled from a registry (internal/imagepull)
)

// Sentinel errors callers test with errors.Is.
var (
	ErrUnknownImage = errors.New("unknown image")
	ErrInvalidName  = errors.New("invalid image name")
	ErrNeedRoot     = errors.New("image builds need root: run them through the root helper")
	ErrNotFound     = errors.New("image not found")
	ErrBadSource    = errors.New("unrecognised image source")
	ErrCorruptImage = errors.New("ext4 image failed its filesystem check")
)

//go:embed catalog.json
var embeddedCatalog []byte

// Catalog is the set of named images banger can build or pull.
type Catalog struct {
	Version int     `json:"version"`
	Default string  `json:"default"`
	Images  []Entry `json:"images"`
}

// Entry is one named image. Debootstrap entries use Suite, Variant,
// Include (and optionally Mirror); OCI entries use Ref.
type Entry struct {
	Name        string   `json:"name"`
	Kind        string   `json:"kind"`
	Description string   `json:"description,omitempty"`
	Suite       string   `json:"suite,omitempty"`
	Variant     string   `json:"variant,omitempty"`
	Include     []string `json:"include,omitempty"`
	// Mirror pins the archive; empty means the configured or host mirror.
	Mirror string `json:"mirror,omitempty"`
	Ref    string `json:"ref,omitempty"`
}

var (
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	// Debian suite and package names; they reach debootstrap's argv.
	suiteRE   = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	packageRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]{0,127}$`)
	variantRE = regexp.MustCompile(`^[a-z]{1,32}$`)
)

// ValidateName checks an image name is safe as a directory name and a CLI
// argument.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: %q (want lower-case letters, digits, '.', '_' or '-', at most 64)", ErrInvalidName, name)
	}
	return nil
}

// Load returns the catalog embedded in this build.
func Load() (*Catalog, error) {
	return Parse(embeddedCatalog)
}

// Parse decodes and validates a catalog.
func Parse(data []byte) (*Catalog, error) {
	var c Catalog
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("decode image catalog: %w", err)
	}
	if c.Version != 1 {
		return nil, fmt.Errorf("image catalog version %d is not supported (want 1)", c.Version)
	}
	seen := map[string]bool{}
	for _, e := range c.Images {
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("image catalog: %w", err)
		}
		if seen[e.Name] {
			return nil, fmt.Errorf("image catalog: duplicate image %q", e.Name)
		}
		seen[e.Name] = true
	}
	if c.Default != "" && !seen[c.Default] {
		return nil, fmt.Errorf("image catalog: default image %q is not listed", c.Default)
	}
	return &c, nil
}

// Validate checks an entry's fields for its kind.
func (e Entry) Validate() error {
	if err := ValidateName(e.Name); err != nil {
		return err
	}
	switch e.Kind {
	case KindDebootstrap:
		if !suiteRE.MatchString(e.Suite) {
			return fmt.Errorf("image %q: invalid suite %q", e.Name, e.Suite)
		}
		if e.Variant != "" && !variantRE.MatchString(e.Variant) {
			return fmt.Errorf("image %q: invalid variant %q", e.Name, e.Variant)
		}
		for _, p := range e.Include {
			if !packageRE.MatchString(p) {
				return fmt.Errorf("image %q: invalid package name %q", e.Name, p)
			}
		}
		if e.Mirror != "" {
			if err := validateMirror(e.Mirror); err != nil {
				return fmt.Errorf("image %q: %w", e.Name, err)
			}
		}
	case KindOCI:
		if e.Ref == "" || strings.ContainsAny(e.Ref, " \t\n") {
			return fmt.Errorf("image %q: invalid OCI reference %q", e.Name, e.Ref)
		}
	default:
		return fmt.Errorf("image %q: unknown kind %q", e.Name, e.Kind)
	}
	return nil
}

// Lookup returns the entry called name.
func (c *Catalog) Lookup(name string) (Entry, error) {
	i := slices.IndexFunc(c.Images, func(e Entry) bool { return e.Name == name })
	if i < 0 {
		return Entry{}, fmt.Errorf("%w: %q", ErrUnknownImage, name)
	}
	return c.Images[i], nil
}

// DefaultEntry returns the catalog's default image.
func (c *Catalog) DefaultEntry() (Entry, error) {
	return c.Lookup(c.Default)
}
