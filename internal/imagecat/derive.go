package imagecat

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
)

// MaxPlanPackages caps how many packages one plan image may add: a plan
// names a handful of tools, and each one is a download and a dpkg run as
// root.
const MaxPlanPackages = 32

// PlanPackage is one Debian package a plan image adds to its base, at the
// exact version the plan resolved.
type PlanPackage struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

func (p PlanPackage) String() string { return p.Name + "=" + p.Version }

// ErrInvalidPlan marks a plan refused before any work.
var ErrInvalidPlan = errors.New("invalid plan")

// debVersionRE is Debian policy's version grammar: [epoch:]upstream[-revision],
// the upstream part starting with a digit.
var debVersionRE = regexp.MustCompile(`^(?:[0-9]{1,9}:)?[0-9][A-Za-z0-9.+~:-]{0,127}$`)

// plan packages follow Debian policy: at least two characters.
var planPackageRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]{1,127}$`)

// ValidatePlan checks a plan's packages against Debian's name and version
// grammars (they reach debootstrap's argv as root), their count, and that
// each is named once. It returns them sorted by name.
func ValidatePlan(pkgs []PlanPackage) ([]PlanPackage, error) {
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("%w: no packages (a plan with nothing to install uses the base image)", ErrInvalidPlan)
	}
	if len(pkgs) > MaxPlanPackages {
		return nil, fmt.Errorf("%w: %d packages, at most %d", ErrInvalidPlan, len(pkgs), MaxPlanPackages)
	}
	out := slices.Clone(pkgs)
	for _, p := range out {
		if !planPackageRE.MatchString(p.Name) {
			return nil, fmt.Errorf("%w: %q is not a Debian package name (lower-case letters, digits, '+', '-', '.'; at least two, starting with a letter or digit)", ErrInvalidPlan, p.Name)
		}
		if !validDebVersion(p.Version) {
			return nil, fmt.Errorf("%w: package %s: %q is not a Debian version ([epoch:]upstream[-revision])", ErrInvalidPlan, p.Name, p.Version)
		}
	}
	slices.SortFunc(out, func(a, b PlanPackage) int { return strings.Compare(a.Name, b.Name) })
	for i := 1; i < len(out); i++ {
		if out[i].Name == out[i-1].Name {
			return nil, fmt.Errorf("%w: package %s is named twice", ErrInvalidPlan, out[i].Name)
		}
	}
	return out, nil
}

func validDebVersion(v string) bool {
	if !debVersionRE.MatchString(v) {
		return false
	}
	// A colon only after an epoch; a hyphen only if a revision follows.
	rest := v
	if i := strings.IndexByte(v, ':'); i >= 0 && i < 10 && strings.Trim(v[:i], "0123456789") == "" {
		rest = v[i+1:]
	}
	if strings.ContainsRune(rest, ':') {
		return false
	}
	return !strings.HasSuffix(rest, "-")
}

// PlanHash is the hash a plan image is keyed by: the sorted name=version
// lines, as toolingplan.Plan.Hash computes it.
func PlanHash(pkgs []PlanPackage) string {
	h := sha256.New()
	for _, p := range pkgs {
		fmt.Fprintf(h, "%s=%s\n", p.Name, p.Version)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// PlanImageName is the name of base's image with pkgs added:
// "<base>-plan-<first 8 hex of PlanHash>".
func PlanImageName(base string, pkgs []PlanPackage) string {
	return base + "-plan-" + PlanHash(pkgs)[:8]
}

// PlanEntry is the catalog entry of base with pkgs added (validated and
// sorted by ValidatePlan): a fresh debootstrap of base's suite and
// packages plus the plan's, so debootstrap resolves their dependencies and
// verifies every download against the signed archive.
func PlanEntry(base Entry, pkgs []PlanPackage) (Entry, error) {
	if base.Kind != KindDebootstrap {
		return Entry{}, fmt.Errorf("%w: base image %q is a %s image: plans build on debootstrap images", ErrInvalidPlan, base.Name, base.Kind)
	}
	pkgs, err := ValidatePlan(pkgs)
	if err != nil {
		return Entry{}, err
	}
	e := base
	e.Name = PlanImageName(base.Name, pkgs)
	e.Include = slices.Clone(base.Include)
	var names []string
	for _, p := range pkgs {
		if !slices.Contains(e.Include, p.Name) {
			e.Include = append(e.Include, p.Name)
		}
		names = append(names, p.String())
	}
	e.Description = base.Description + "; plan: " + strings.Join(names, " ")
	if err := ValidateName(e.Name); err != nil {
		return Entry{}, fmt.Errorf("%w: %w", ErrInvalidPlan, err)
	}
	return e, e.Validate()
}

// CheckInstalled reads dpkg's status file of the tree at rootfs (through an
// os.Root, so no link in the tree leads out of it) and checks each of pkgs
// is installed at exactly the planned version: the suite debootstrap used
// may hold another version than the plan resolved (an update or security
// suite), and a plan is never silently downgraded.
func CheckInstalled(rootfs string, pkgs []PlanPackage) error {
	r, err := os.OpenRoot(rootfs)
	if err != nil {
		return fmt.Errorf("check installed packages: %w", err)
	}
	defer r.Close()
	f, err := r.Open("var/lib/dpkg/status")
	if err != nil {
		return fmt.Errorf("check installed packages: %w", err)
	}
	defer f.Close()
	installed := map[string]string{}
	var name, version, status string
	flush := func() {
		if name != "" && strings.HasSuffix(status, " installed") {
			installed[name] = version
		}
		name, version, status = "", "", ""
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			flush()
		case strings.HasPrefix(line, "Package: "):
			name = strings.TrimPrefix(line, "Package: ")
		case strings.HasPrefix(line, "Version: "):
			version = strings.TrimPrefix(line, "Version: ")
		case strings.HasPrefix(line, "Status: "):
			status = strings.TrimPrefix(line, "Status: ")
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("check installed packages: read dpkg status: %w", err)
	}
	flush()
	var errs []error
	for _, p := range pkgs {
		got, ok := installed[p.Name]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s is not installed", p.Name))
		case got != p.Version:
			errs = append(errs, fmt.Errorf("%s: the plan wants %s, the suite installed %s (plan again: banger plan)", p.Name, p.Version, got))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("check installed packages: %w", errors.Join(errs...))
	}
	return nil
}

// PlanSourceSuffix is what a plan image's Source gains: its packages
// (image inspect shows them).
func PlanSourceSuffix(pkgs []PlanPackage) string {
	s := make([]string, len(pkgs))
	for i, p := range pkgs {
		s[i] = p.String()
	}
	return " plan:" + strings.Join(s, ",")
}
