// Package buildinfo holds the version, commit and build time stamped into every
// banger binary with -ldflags "-X github.com/bangerdev/banger/internal/buildinfo.Version=…".
package buildinfo

import (
	"fmt"
	"runtime"
)

// Set at link time; the defaults mark an unstamped development build.
var (
	Version = "v0.0.0-dev"
	Commit  = "unknown"
	BuiltAt = "unknown"
)

// Info is the wire and JSON form of the build metadata.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	BuiltAt   string `json:"built_at"`
	GoVersion string `json:"go_version"`
}

// Get returns the stamped build metadata.
func Get() Info {
	return Info{Version: Version, Commit: Commit, BuiltAt: BuiltAt, GoVersion: runtime.Version()}
}

// String renders "v1.2.3 (commit abc123, built 2026-…)".
func (i Info) String() string {
	return fmt.Sprintf("%s (commit %s, built %s, %s)", i.Version, i.Commit, i.BuiltAt, i.GoVersion)
}
