package updater

import (
	"errors"
	"fmt"

	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/system"
)

// Targets are the installed binaries an update replaces.
type Targets struct {
	Banger  string // /usr/local/bin/banger
	Bangerd string // /usr/local/bin/bangerd
	Agent   string // /usr/local/lib/banger/banger-vsock-agent
	Helper  string // /usr/local/lib/banger/banger-helper
}

// InstallTargets pins the canonical install paths under sys.Root.
func InstallTargets(sys paths.System) Targets {
	return Targets{Banger: sys.BangerBin(), Bangerd: sys.BangerdBin(), Agent: sys.AgentBin(), Helper: sys.HelperBin()}
}

// all lists the targets in swap order.
func (t Targets) all() []string { return []string{t.Agent, t.Helper, t.Bangerd, t.Banger} }

// staged lists the staged copies in swap order, matching all.
func (s StagedRelease) all() []string { return []string{s.Agent, s.Helper, s.Bangerd, s.Banger} }

// SwapResult records which targets were replaced, in swap order, so a
// partial swap can be unwound exactly.
type SwapResult struct {
	SwappedTargets []string
}

// Swap replaces the installed binaries with the staged ones, in the order
// vsock agent → root helper → bangerd → banger so the CLI, the binary a user runs next,
// changes last. Each step is system.AtomicReplace (the old binary stays as
// .previous). It stops at the first failure; the result lists what was
// swapped so far, for Rollback.
func Swap(staged StagedRelease, t Targets) (SwapResult, error) {
	return swapWith(staged, t, nil)
}

// swapWith is Swap calling after(n, target) once swap n (1-based) is done;
// an error from after stops the swap like a failed step.
func swapWith(staged StagedRelease, t Targets, after func(n int, target string) error) (SwapResult, error) {
	var res SwapResult
	steps := []struct{ src, dst string }{
		{staged.Agent, t.Agent},
		{staged.Helper, t.Helper},
		{staged.Bangerd, t.Bangerd},
		{staged.Banger, t.Banger},
	}
	for _, s := range steps {
		if err := system.AtomicReplace(s.src, s.dst); err != nil {
			return res, fmt.Errorf("swap binaries (%d of %d done): %w", len(res.SwappedTargets), len(steps), err)
		}
		res.SwappedTargets = append(res.SwappedTargets, s.dst)
		if after != nil {
			if err := after(len(res.SwappedTargets), s.dst); err != nil {
				return res, fmt.Errorf("swap binaries (%d of %d done): %w", len(res.SwappedTargets), len(steps), err)
			}
		}
	}
	return res, nil
}

// Rollback restores the .previous version of every swapped target, in
// reverse order. It tries every target and joins the errors, so a half
// rolled-back install reports each binary an operator must fix.
func Rollback(res SwapResult) error {
	var errs []error
	for i := len(res.SwappedTargets) - 1; i >= 0; i-- {
		if err := system.Rollback(res.SwappedTargets[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("roll back binaries: %w", err)
	}
	return nil
}

// CleanupBackups removes the .previous files once the new install is
// known to be healthy.
func CleanupBackups(t Targets) error {
	var errs []error
	for _, p := range t.all() {
		errs = append(errs, system.RemoveBackup(p))
	}
	return errors.Join(errs...)
}
