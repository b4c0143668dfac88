package toolingplan

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/bangerdev/banger/internal/debarchive"
	"github.com/bangerdev/banger/internal/termsafe"
)

// Lookup finds the highest version of a Debian package in the image's
// suite; a missing package is an error wrapping debarchive.ErrNotFound.
// (*debarchive.Archive).Resolve and StaticIndex both provide one.
type Lookup func(ctx context.Context, name string) (debarchive.Package, error)

// ArchiveLookup resolves through a verified Debian archive.
func ArchiveLookup(a *debarchive.Archive) Lookup {
	return func(ctx context.Context, name string) (debarchive.Package, error) {
		return a.Resolve(ctx, name, nil)
	}
}

// StaticIndex resolves from a plain Packages index (a fixture, or one
// already verified).
func StaticIndex(r io.Reader, suite string) (Lookup, error) {
	idx, err := debarchive.ReadPackagesIndex(r, suite)
	if err != nil {
		return nil, fmt.Errorf("read packages index: %w", err)
	}
	return func(_ context.Context, name string) (debarchive.Package, error) {
		p, ok := debarchive.Highest(idx, name)
		if !ok {
			return p, fmt.Errorf("resolve %s: %w", name, debarchive.ErrNotFound)
		}
		return p, nil
	}, nil
}

// packages maps a tool to the Debian package that provides it.
var packages = map[string]string{
	"go": "golang-go", "node": "nodejs", "python": "python3", "rust": "rustc",
	"cargo": "cargo", "rustc": "rustc", "npm": "npm", "npx": "npm", "yarn": "yarnpkg",
	"pip": "python3-pip", "pip3": "python3-pip", "python3": "python3",
	"gcc": "gcc", "cc": "gcc", "clang": "clang", "protoc": "protobuf-compiler",
	"jq": "jq", "git": "git", "curl": "curl", "docker": "docker.io", "shellcheck": "shellcheck",
	"zip": "zip", "unzip": "unzip", "rsync": "rsync", "make": "make",
}

// Step is how one request is satisfied, or why it cannot be.
type Step struct {
	Request
	Package   string `json:"package,omitempty"`   // Debian package
	Available string `json:"available,omitempty"` // its Debian version in the suite
	Upstream  string `json:"upstream,omitempty"`  // the tool version that package carries
	Suite     string `json:"suite,omitempty"`
	Satisfied bool   `json:"satisfied"`
	Reason    string `json:"reason,omitempty"` // why not, in plain words
}

// Plan is a project's tooling plan.
type Plan struct {
	Steps    []Step   `json:"steps"`
	Packages []string `json:"packages"` // to install (satisfied steps), sorted, once each
	Complete bool     `json:"complete"` // every step satisfied
	Hash     string   `json:"hash"`     // of packages and versions: an image built from this plan
}

// Make plans reqs against the suite that lookup reads. Only a lookup
// failure other than a missing package is an error; an unsatisfiable
// request is a step that says so.
func Make(ctx context.Context, reqs []Request, lookup Lookup) (Plan, error) {
	p := Plan{Complete: true}
	chosen := map[string]string{}
	for _, r := range reqs {
		s, err := step(ctx, r, lookup)
		if err != nil {
			return Plan{}, err
		}
		if s.Satisfied {
			chosen[s.Package] = s.Available
		} else {
			p.Complete = false
		}
		p.Steps = append(p.Steps, s)
	}
	h := sha256.New()
	for _, name := range sortedKeys(chosen) {
		p.Packages = append(p.Packages, name)
		fmt.Fprintf(h, "%s=%s\n", name, chosen[name])
	}
	if p.Packages == nil {
		p.Packages = []string{}
	}
	p.Hash = hex.EncodeToString(h.Sum(nil))
	return p, nil
}

func step(ctx context.Context, r Request, lookup Lookup) (Step, error) {
	s := Step{Request: r}
	pkg, ok := packages[r.Tool]
	if !ok {
		s.Reason = fmt.Sprintf("not satisfiable from the distro: no Debian package is known to provide %s", r.Tool)
		return s, nil
	}
	s.Package = pkg
	p, err := lookup(ctx, pkg)
	if errors.Is(err, debarchive.ErrNotFound) {
		s.Reason = fmt.Sprintf("not satisfiable from the distro: %s is not in the suite", pkg)
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("look up %s for %s: %w", pkg, r.Tool, err)
	}
	s.Available, s.Suite, s.Upstream = p.Version, p.Suite, Upstream(p.Version)
	if r.Version == "" {
		s.Satisfied = true
		return s, nil
	}
	c, err := ParseConstraint(r.Version)
	if err != nil {
		s.Reason = fmt.Sprintf("not satisfiable from the distro: %v; %s available", err, s.Upstream)
		return s, nil
	}
	if !c.Allows(s.Upstream) {
		s.Reason = fmt.Sprintf("not satisfiable from the distro: %s wanted, %s available", r.Version, s.Upstream)
		return s, nil
	}
	s.Satisfied = true
	return s, nil
}

// Upstream is the tool version a Debian version carries: no epoch, no
// revision, nothing after "~" or "+" ("2:1.19~1" → "1.19",
// "18.19.0+dfsg-6~deb12u2" → "18.19.0").
func Upstream(debVersion string) string {
	v := debVersion
	if _, after, ok := strings.Cut(v, ":"); ok {
		v = after
	}
	if i := strings.LastIndex(v, "-"); i > 0 {
		v = v[:i]
	}
	if i := strings.IndexAny(v, "~+"); i > 0 {
		v = v[:i]
	}
	return v
}

// Text renders the plan for a terminal, one line per step.
func (p Plan) Text(w io.Writer) {
	if len(p.Steps) == 0 {
		fmt.Fprintln(w, "no tool requirements found (go.mod, package.json, .nvmrc, Cargo.toml, rust-toolchain.toml, pyproject.toml, .python-version, .tool-versions, mise.toml, Makefile)")
		return
	}
	rows := [][]string{{"TOOL", "WANTED", "SOURCE", "PLAN"}}
	for _, s := range p.Steps {
		want := s.Version
		if want == "" {
			want = "any"
		}
		how := s.Reason
		if s.Satisfied {
			how = fmt.Sprintf("%s %s (%s)", s.Package, s.Available, s.Suite)
		}
		// Project files may come from anywhere: no escape sequence reaches the terminal.
		rows = append(rows, []string{termsafe.Line(s.Tool), termsafe.Line(want), termsafe.Line(s.Source), termsafe.Line(how)})
	}
	widths := make([]int, 3)
	for _, r := range rows {
		for i := range widths {
			widths[i] = max(widths[i], len(r[i]))
		}
	}
	for _, r := range rows {
		fmt.Fprintf(w, "%-*s  %-*s  %-*s  %s\n", widths[0], r[0], widths[1], r[1], widths[2], r[2], r[3])
	}
	if len(p.Packages) > 0 {
		fmt.Fprintf(w, "\npackages: %s\n", strings.Join(slices.Clone(p.Packages), " "))
	}
	if !p.Complete {
		fmt.Fprintln(w, "some tools are not satisfiable from the distro (see above): install them in the VM another way")
	}
}
