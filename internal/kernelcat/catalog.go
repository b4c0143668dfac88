// Package kernelcat is banger's kernel catalog and store: named kernels
// (Debian's cloud kernel through the apt archive, pinned URLs, or local
// imports) pulled into a per-user directory with everything a VMM and the
// guest's initramfs need, and a record of which VMMs can boot each one.
package kernelcat

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"

	"github.com/bangerdev/banger/internal/model"
)

//go:embed catalog.json
var embeddedCatalog []byte

// Source kinds.
const (
	KindDebian = "debian" // a Debian package resolved through debarchive
	KindURL    = "url"    // a direct download with a pinned hash and size
	KindLocal  = "local"  // imported from a file (records only, never in the catalog)
)

// Sentinel errors callers test.
var (
	ErrUnknownKernel = errors.New("no such kernel")
	ErrUnpinned      = errors.New("catalog entry has no pinned sha256 and size")
	ErrBadName       = errors.New("invalid kernel name")
)

// EntrySource says where a catalog kernel comes from.
type EntrySource struct {
	Kind    string `json:"kind"`
	Package string `json:"package,omitempty"` // KindDebian
	URL     string `json:"url,omitempty"`     // KindURL
	SHA256  string `json:"sha256,omitempty"`  // KindURL
	Size    int64  `json:"size,omitempty"`    // KindURL
	// VMMs the publisher says can boot it, used when no kernel config comes
	// with it (a bare vmlinux).
	VMMs []model.VMMKind `json:"vmms,omitempty"`
}

// Entry is one named kernel of the catalog.
type Entry struct {
	Name        string      `json:"name"`
	Description string      `json:"description"`
	Source      EntrySource `json:"source"`
}

// Catalog is a versioned list of named kernels.
type Catalog struct {
	Version     int     `json:"version"`
	DefaultName string  `json:"default"`
	Kernels     []Entry `json:"kernels"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ValidName reports whether name can name a kernel (and its store dir).
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%q: %w (lower-case letters, digits, '.', '_', '-'; at most 64)", name, ErrBadName)
	}
	return nil
}

// Embedded returns the catalog built into this banger.
func Embedded() *Catalog {
	c, err := ParseCatalog(embeddedCatalog)
	if err != nil {
		panic("embedded kernel catalog is invalid: " + err.Error()) // caught by the tests
	}
	return c
}

// ParseCatalog parses and validates catalog JSON.
func ParseCatalog(data []byte) (*Catalog, error) {
	var c Catalog
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("parse kernel catalog: %w", err)
	}
	if c.Version < 1 {
		return nil, fmt.Errorf("kernel catalog has no version")
	}
	seen := map[string]bool{}
	for _, e := range c.Kernels {
		if err := ValidName(e.Name); err != nil {
			return nil, fmt.Errorf("kernel catalog: %w", err)
		}
		if seen[e.Name] {
			return nil, fmt.Errorf("kernel catalog: %q listed twice", e.Name)
		}
		seen[e.Name] = true
		switch e.Source.Kind {
		case KindDebian:
			if e.Source.Package == "" {
				return nil, fmt.Errorf("kernel catalog: %q names no package", e.Name)
			}
		case KindURL:
			if e.Source.URL == "" {
				return nil, fmt.Errorf("kernel catalog: %q has no url", e.Name)
			}
			if e.Source.SHA256 != "" && (len(e.Source.SHA256) != 64 || e.Source.Size <= 0) {
				return nil, fmt.Errorf("kernel catalog: %q needs a 64-digit sha256 and a size", e.Name)
			}
		default:
			return nil, fmt.Errorf("kernel catalog: %q has unknown source kind %q", e.Name, e.Source.Kind)
		}
		for _, v := range e.Source.VMMs {
			if !v.Valid() {
				return nil, fmt.Errorf("kernel catalog: %q names unknown vmm %q", e.Name, v)
			}
		}
	}
	if !seen[c.DefaultName] {
		return nil, fmt.Errorf("kernel catalog: default %q is not listed", c.DefaultName)
	}
	return &c, nil
}

// Entries returns the catalog's kernels.
func (c *Catalog) Entries() []Entry { return slices.Clone(c.Kernels) }

// Default returns the kernel used when none is named.
func (c *Catalog) Default() Entry {
	e, _ := c.Lookup(c.DefaultName)
	return e
}

// Lookup finds a kernel by name.
func (c *Catalog) Lookup(name string) (Entry, error) {
	for _, e := range c.Kernels {
		if e.Name == name {
			return e, nil
		}
	}
	return Entry{}, fmt.Errorf("kernel %q: %w in catalog version %d", name, ErrUnknownKernel, c.Version)
}
