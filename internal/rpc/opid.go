package rpc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
)

type opIDKey struct{}

// WithOpID returns ctx carrying op_id, so every call made under it (to the
// daemon or the root helper) sends the same id.
func WithOpID(ctx context.Context, opID string) context.Context {
	return context.WithValue(ctx, opIDKey{}, opID)
}

// OpIDFrom returns the op_id carried by ctx, or "".
func OpIDFrom(ctx context.Context) string {
	s, _ := ctx.Value(opIDKey{}).(string)
	return s
}

// NewOpID makes a fresh random op_id ("op-" and 12 hex digits).
func NewOpID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "op-" + hex.EncodeToString(b[:])
}

// ValidOpID accepts ids made by NewOpID or by clients: 1–64 characters of
// [A-Za-z0-9._-], so they are safe in log lines and file names.
func ValidOpID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}
