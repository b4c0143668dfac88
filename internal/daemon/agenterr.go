package daemon

import (
	"context"
	"errors"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
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
	case errors.Is(err, agentproto.ErrBadRequest):
		code = api.CodeInvalidArgument
	case errors.Is(err, agentproto.ErrNotFound):
		code = api.CodeNotFound
	case errors.Is(err, agentproto.ErrUnknownMethod), errors.Is(err, agentproto.ErrUnsupported):
		code = api.CodeUnimplemented // an older or smaller agent
	case errors.Is(err, agentproto.ErrExecFailed):
		code = api.CodeFailedPrecondition
	case errors.Is(err, agentproto.ErrUnsafePath), errors.Is(err, agentproto.ErrUnsafeEntry):
		// The host refused what the guest sent: nothing to retry.
		code = api.CodePermissionDenied
	case errors.Is(err, agentproto.ErrArchiveLimit):
		code = api.CodeFailedPrecondition // raise copy.max_* if expected
	case errors.Is(err, agentproto.ErrDialFailed), errors.Is(err, agentproto.ErrConnectionLost),
		errors.Is(err, context.DeadlineExceeded):
		code = api.CodeUnavailable
	}
	if code == api.CodeInternal {
		return err
	}
	return api.Wrap(code, err)
}
