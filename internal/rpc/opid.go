package rpc

import (
	"context"

	"github.com/bangerdev/banger/internal/opid"
)

// WithOpID returns ctx carrying op_id (see opid.With).
func WithOpID(ctx context.Context, opID string) context.Context { return opid.With(ctx, opID) }

// OpIDFrom returns the op_id carried by ctx, or "" (see opid.From).
func OpIDFrom(ctx context.Context) string { return opid.From(ctx) }

// NewOpID makes a fresh random op_id (see opid.New).
func NewOpID() string { return opid.New() }

// ValidOpID reports whether s is an acceptable op_id (see opid.Valid).
func ValidOpID(s string) bool { return opid.Valid(s) }
