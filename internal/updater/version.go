package updater

import (
	"fmt"
	"regexp"
	"strings"

	"golang.org/x/mod/semver"
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
var versionRE = regexp.MustCompile(`^v[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$`)

// ValidVersion reports whether v is acceptable as a release name: it is used
// in file names and URLs, so only a "v" and [0-9A-Za-z.+-] are allowed.
func ValidVersion(v string) bool { return versionRE.MatchString(v) && !strings.Contains(v, "..") }

// IsRelease reports whether v is a semver release version (see the rule
// above): valid semver in its full vMAJOR.MINOR.PATCH form (semver.IsValid
// also takes the shorthands v1 and v1.2, which are not releases).
func IsRelease(v string) bool {
	core, _, _ := strings.Cut(v, "+")
	return semver.IsValid(v) && semver.Canonical(v) == core
}

// CompareVersions orders two release versions by semver precedence,
// returning -1, 0 or 1. ok is false when either is not a release version
// (a development build), which has no order.
func CompareVersions(a, b string) (cmp int, ok bool) {
	if !IsRelease(a) || !IsRelease(b) {
		return 0, false
	}
	return semver.Compare(a, b), true
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
