// Package faultinject lets a test stop the owner daemon at a named step of
// an operation, so it can SIGKILL it exactly there: no sleeps, no races.
//
// It works only in binaries built with the `faultinject` build tag (the
// fault tests build their own bangerd with it). In every other build Pause
// is an empty function and the environment is never read: a release binary
// cannot be made to stall by its environment (TestReleaseBuildIgnoresFaults).
//
// With the tag, BANGER_FAULT_PAUSE names points as KIND/STEP (comma
// separated: create/disk, start/vmm, stop/poweroff, remove/detach); at such
// a point Pause writes the file KIND.STEP into BANGER_FAULT_DIR (the
// daemon's pid in it) and blocks until its context ends or MaxPause passes.
package faultinject

import "time"

// Environment read by binaries built with the faultinject tag.
const (
	EnvPause = "BANGER_FAULT_PAUSE"
	EnvDir   = "BANGER_FAULT_DIR"
)

// MaxPause bounds a pause: a test that forgot to kill the daemon does not
// leave it stuck for ever.
const MaxPause = 10 * time.Minute

// Point names a pause point.
func Point(kind, step string) string { return kind + "/" + step }
