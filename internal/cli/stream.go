package cli

import (
	"context"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
)

// watchStream opens method as a stream the client only reads (events,
// ports -w) and hands each data frame to fn until the call's result, the
// end of ctx (Ctrl-C: a normal end, nil) or an error from fn.
func watchStream[Req, Resp any](ctx context.Context, a *app, method api.Method[Req, Resp], req Req, fn func(rpc.Frame) error) error {
	c, err := a.client(ctx)
	if err != nil {
		return err
	}
	s, err := rpc.OpenStream(ctx, c, method, req)
	if err != nil {
		return err
	}
	defer s.Close()
	_ = s.CloseSend()
	for {
		f, err := s.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil // Ctrl-C
			}
			return err
		}
		switch f.Type {
		case rpc.FrameResult:
			return nil
		case rpc.FrameData:
			if err := fn(f); err != nil {
				return err
			}
		}
	}
}
