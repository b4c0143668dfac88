// Package opid carries a request's op_id (and the VM it acts on) in a
// context, and puts both on every log line logged with that context: the
// Handler wraps any slog.Handler. It imports only the standard library, so
// every package on a request's path (transport, daemon, lifecycle,
// networking, guest agent client) can use it.
package opid

import (
	"context"
	"crypto/rand"
	"encoding/hex"
)

type opIDKey struct{}

type vmKey struct{}

// With returns ctx carrying op_id, so every call made under it (to the
// daemon, the root helper, a guest agent) sends the same id and every line
// logged with it carries it.
func With(ctx context.Context, opID string) context.Context {
	return context.WithValue(ctx, opIDKey{}, opID)
}

// From returns the op_id carried by ctx, or "".
func From(ctx context.Context) string {
	s, _ := ctx.Value(opIDKey{}).(string)
	return s
}

// WithVM returns ctx naming the VM an operation acts on, for log lines.
func WithVM(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, vmKey{}, name)
}

// VM returns the VM name carried by ctx, or "".
func VM(ctx context.Context) string {
	s, _ := ctx.Value(vmKey{}).(string)
	return s
}

// New makes a fresh random op_id ("op-" and 12 hex digits).
func New() string { return NewPrefixed("op") }

// NewPrefixed makes a fresh random id with another prefix, for work the
// daemon starts on its own ("bg-dns-…"), so its lines are told apart from
// any request's.
func NewPrefixed(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// Valid accepts ids made by New or by clients: 1–64 characters of
// [A-Za-z0-9._-], so they are safe in log lines and file names.
func Valid(s string) bool {
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
