package agentserver

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
)

// Identity hooks of the guest side (ServerOptions).
type (
	FreezeFunc     func(ctx context.Context, autoThaw time.Duration) error
	ThawFunc       func(ctx context.Context) error
	ReidentifyFunc func(ctx context.Context, id agentproto.Identity) (agentproto.Reidentified, error)
)

func (s *Server) handleFreeze(ctx context.Context, st *agentproto.Stream, log *slog.Logger, params json.RawMessage) error {
	if s.opts.Freeze == nil {
		return fail(st, agentproto.Errorf(agentproto.CodeUnsupported, "this agent cannot freeze filesystems"))
	}
	var p agentproto.Freeze
	if err := decodeParams(params, &p); err != nil {
		return fail(st, err)
	}
	if p.AutoThawSeconds < 1 || p.AutoThawSeconds > 600 {
		return fail(st, agentproto.Errorf(agentproto.CodeBadRequest, "auto_thaw_seconds %d is outside 1..600", p.AutoThawSeconds))
	}
	if err := s.opts.Freeze(ctx, time.Duration(p.AutoThawSeconds)*time.Second); err != nil {
		return fail(st, agentproto.Errorf(agentproto.CodeIO, "freeze: %v", err))
	}
	log.Info("filesystems frozen by host", "auto_thaw", p.AutoThawSeconds)
	return Respond(st, struct{}{})
}

func (s *Server) handleThaw(ctx context.Context, st *agentproto.Stream, log *slog.Logger, _ json.RawMessage) error {
	if s.opts.Thaw == nil {
		return fail(st, agentproto.Errorf(agentproto.CodeUnsupported, "this agent cannot thaw filesystems"))
	}
	if err := s.opts.Thaw(ctx); err != nil {
		return fail(st, agentproto.Errorf(agentproto.CodeIO, "thaw: %v", err))
	}
	log.Info("filesystems thawed by host")
	return Respond(st, struct{}{})
}

func (s *Server) handleReidentify(ctx context.Context, st *agentproto.Stream, log *slog.Logger, params json.RawMessage) error {
	if s.opts.Reidentify == nil {
		return fail(st, agentproto.Errorf(agentproto.CodeUnsupported, "this agent cannot take a new identity"))
	}
	var id agentproto.Identity
	if err := decodeParams(params, &id); err != nil {
		return fail(st, err)
	}
	if err := id.Validate(); err != nil {
		return fail(st, agentproto.Errorf(agentproto.CodeBadRequest, "identity: %v", err))
	}
	out, err := s.opts.Reidentify(ctx, id)
	if err != nil {
		return fail(st, agentproto.Errorf(agentproto.CodeIO, "take new identity: %v", err))
	}
	s.bootID.Store(&id.BootID)
	log.Info("new identity from host", "hostname", id.Hostname, "boot_id", id.BootID)
	return Respond(st, out)
}
