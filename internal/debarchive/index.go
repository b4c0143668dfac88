package debarchive

import (
	"io"
	"slices"
)

// ReadPackagesIndex parses a plain Packages index (as served for suite) into
// name → versions. It is for indices already verified or test fixtures;
// Archive fetches and verifies the real ones.
func ReadPackagesIndex(r io.Reader, suite string) (map[string][]Package, error) {
	return parsePackages(r, "", suite)
}

// Highest returns the highest version of name in idx.
func Highest(idx map[string][]Package, name string) (Package, bool) {
	ps := idx[name]
	if len(ps) == 0 {
		return Package{}, false
	}
	return slices.MaxFunc(ps, func(a, b Package) int { return CompareVersions(a.Version, b.Version) }), true
}
