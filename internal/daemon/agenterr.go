package daemon

import (
	"context"
	"errors"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guest/guestagent"
)

// agentError gives an error from a guest agent call its wire code, in this
// one place: the agent's codes (sent by the guest, so only a code, never
// trusted for more) and the agent client's own failures map to the API's
// vocabulary; the rest is internal. The chain is kept (api.Wrap). A typed
// API error already in the chain wins.
func agentError(err error) error {
	if err == nil {
		return nil
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return err
	}
	code := api.CodeInternal
	switch {
	case errors.Is(err, context.Canceled):
		code = api.CodeCanceled
	case errors.Is(err, guestagent.ErrBadRequest):
		code = api.CodeInvalidArgument
	case errors.Is(err, guestagent.ErrNotFound):
		code = api.CodeNotFound
	case errors.Is(err, guestagent.ErrUnknownMethod), errors.Is(err, guestagent.ErrUnsupported):
		code = api.CodeUnimplemented // an older or smaller agent
	case errors.Is(err, guestagent.ErrExecFailed):
		code = api.CodeFailedPrecondition
	case errors.Is(err, guestagent.ErrUnsafePath), errors.Is(err, guestagent.ErrUnsafeEntry):
		// The host refused what the guest sent: nothing to retry.
		code = api.CodePermissionDenied
	case errors.Is(err, guestagent.ErrArchiveLimit):
		code = api.CodeFailedPrecondition // raise copy.max_* if expected
	case errors.Is(err, guestagent.ErrDialFailed), errors.Is(err, guestagent.ErrConnectionLost),
		errors.Is(err, context.DeadlineExceeded):
		code = api.CodeUnavailable
	}
	if code == api.CodeInternal {
		return err
	}
	return api.Wrap(code, err)
}
