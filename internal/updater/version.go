package updater

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Version rule (documented in doc.go):
//
//   - A release version is semver with a "v": vMAJOR.MINOR.PATCH, optionally
//     -PRERELEASE and +BUILD. Releases are ordered by semver precedence
//     (v0.2.0-rc.1 < v0.2.0 < v0.10.0; build metadata is ignored).
//   - Anything else made of [0-9A-Za-z.+-] after a "v" (v0.smoke.0,
//     v0.smoke.broken-bangerd) is a development build: it has no order. An
//     installed development build is offered the manifest's latest release
//     whenever they differ, and a development build is only installed when
//     the manifest names it latest or --to asks for it.
var (
	semverRE  = regexp.MustCompile(`^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$`)
	versionRE = regexp.MustCompile(`^v[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$`)
)

// ValidVersion reports whether v is acceptable as a release name: it is used
// in file names and URLs, so only a "v" and [0-9A-Za-z.+-] are allowed.
func ValidVersion(v string) bool { return versionRE.MatchString(v) && !strings.Contains(v, "..") }

// IsRelease reports whether v is a semver release version (see the rule above).
func IsRelease(v string) bool { return semverRE.MatchString(v) }

// CompareVersions orders two release versions by semver precedence,
// returning -1, 0 or 1. ok is false when either is not a release version
// (a development build), which has no order.
func CompareVersions(a, b string) (cmp int, ok bool) {
	ma, mb := semverRE.FindStringSubmatch(a), semverRE.FindStringSubmatch(b)
	if ma == nil || mb == nil {
		return 0, false
	}
	for i := 1; i <= 3; i++ {
		if c := compareNumeric(ma[i], mb[i]); c != 0 {
			return c, true
		}
	}
	return comparePrerelease(ma[4], mb[4]), true
}

func compareNumeric(a, b string) int {
	// Leading zeros are excluded by the pattern, so length orders first.
	if len(a) != len(b) {
		if len(a) < len(b) {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}

// comparePrerelease applies semver §11: no pre-release ranks higher; numeric
// identifiers compare numerically and rank below alphanumeric ones.
func comparePrerelease(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == "":
		return 1
	case b == "":
		return -1
	}
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		ai, aErr := strconv.ParseUint(as[i], 10, 64)
		bi, bErr := strconv.ParseUint(bs[i], 10, 64)
		switch {
		case aErr == nil && bErr == nil:
			if ai != bi {
				if ai < bi {
					return -1
				}
				return 1
			}
		case aErr == nil:
			return -1
		case bErr == nil:
			return 1
		default:
			if c := strings.Compare(as[i], bs[i]); c != 0 {
				return c
			}
		}
	}
	switch {
	case len(as) < len(bs):
		return -1
	case len(as) > len(bs):
		return 1
	}
	return 0
}

// Decision is what --check (and Run before downloading) concludes.
type Decision struct {
	Current         string
	Target          string
	UpdateAvailable bool   // Target should be installed
	Reason          string // one human line explaining the decision
}

// Decide picks the version to install. With to == "" the manifest's latest
// is the candidate and an older latest is never installed (a downgrade needs
// an explicit --to). With to set, it must be listed in the manifest
// (ErrUnknownVersion otherwise) and is installed unless already current.
func Decide(m *Manifest, current, to string) (Decision, error) {
	d := Decision{Current: current}
	if to != "" {
		if !m.Has(to) {
			return d, fmt.Errorf("%s: %w", to, ErrUnknownVersion)
		}
		d.Target = to
		if to == current {
			d.Reason = fmt.Sprintf("%s is already installed", current)
			return d, nil
		}
		d.UpdateAvailable = true
		if c, ok := CompareVersions(to, current); ok && c < 0 {
			d.Reason = fmt.Sprintf("downgrade from %s to %s requested", current, to)
		} else {
			d.Reason = fmt.Sprintf("%s requested (installed: %s)", to, current)
		}
		return d, nil
	}
	d.Target = m.Latest
	if m.Latest == current {
		d.Reason = fmt.Sprintf("%s is the latest release", current)
		return d, nil
	}
	c, ok := CompareVersions(m.Latest, current)
	switch {
	case ok && c < 0:
		d.Reason = fmt.Sprintf("installed %s is newer than the latest release %s (use --to %s to downgrade)", current, m.Latest, m.Latest)
	case ok && c == 0:
		d.Reason = fmt.Sprintf("%s is the latest release", current)
	case ok:
		d.UpdateAvailable = true
		d.Reason = fmt.Sprintf("update available: %s → %s", current, m.Latest)
	default:
		d.UpdateAvailable = true
		d.Reason = fmt.Sprintf("update available: %s → %s (development build: no version order)", current, m.Latest)
	}
	return d, nil
}
