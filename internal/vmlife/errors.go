package vmlife

import (
	"context"
	"errors"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/vmm"
)

// ErrGuestExited: the VMM exited while the guest booted (its init failed
// and powered off, or the kernel panicked): retrying the same VM will not
// help; the console's last lines say why.
var ErrGuestExited = errors.New("guest exited during boot")

// apiError gives a lifecycle error its wire code, in this one place: a
// typed API error raised inside (the root helper's, a step's own) keeps
// its code; the VMM drivers' sentinels and cancellation get theirs; the
// rest is internal. The chain is kept (see api.Wrap), so errors.Is/As on
// StepError, vmm sentinels and context errors hold in-process.
func apiError(err error) error {
	if err == nil {
		return nil
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return err // the rpc server finds it and keeps the wrapping message
	}
	code := lifecycleCode(err)
	if code == api.CodeInternal {
		return err
	}
	return api.Wrap(code, err)
}

func lifecycleCode(err error) string {
	switch {
	case errors.Is(err, context.Canceled):
		return api.CodeCanceled
	case errors.Is(err, vmm.ErrInvalidSpec):
		return api.CodeInvalidArgument
	case errors.Is(err, vmm.ErrUnavailable), errors.Is(err, ErrGuestExited):
		return api.CodeFailedPrecondition
	case errors.Is(err, vmm.ErrUnsupported):
		return api.CodeUnimplemented
	case errors.Is(err, vmm.ErrNotRunning), errors.Is(err, context.DeadlineExceeded):
		// The VMM died, or the guest did not answer in time.
		return api.CodeUnavailable
	}
	return api.CodeInternal
}
