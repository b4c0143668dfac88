package daemon

import (
	"errors"
	"strings"
	"syscall"

	"github.com/bangerdev/banger/internal/api"
)

// noSpace turns a full file system into an error that says so, where and
// what to do; other errors pass through. Tools run as child processes
// (mkfs, the root helper) report it only as text.
func (d *Daemon) noSpace(err error, doing string) error {
	if err == nil {
		return nil
	}
	if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) &&
		!strings.Contains(strings.ToLower(err.Error()), "no space left on device") {
		return err
	}
	return api.Errorf(api.CodeFailedPrecondition, "no space left on the file system holding %s while %s: free space there, or move BANGER_HOME to a larger file system, then try again (%v)", d.paths.Data, doing, err)
}
