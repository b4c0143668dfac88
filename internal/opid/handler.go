package opid

import (
	"context"
	"log/slog"
)

// Attribute keys the Handler adds.
const (
	KeyOpID = "op_id"
	KeyVM   = "vm"
)

// Handler adds op_id and vm from the record's context to every record that
// does not carry them already (a logger made With("op_id", …) keeps its
// own). Use the *Context logging calls on a request's path so the context
// reaches it. Under WithGroup the added attributes are qualified by the
// group, as slog does for any attribute added there.
type Handler struct {
	inner slog.Handler
	// hasOpID, hasVM: the logger already has the attribute (WithAttrs).
	hasOpID, hasVM bool
}

// NewHandler wraps h.
func NewHandler(h slog.Handler) *Handler { return &Handler{inner: h} }

func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if ctx == nil {
		return h.inner.Handle(ctx, r)
	}
	needOp, needVM := !h.hasOpID, !h.hasVM
	if needOp || needVM {
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case KeyOpID:
				needOp = false
			case KeyVM:
				needVM = false
			}
			return needOp || needVM
		})
	}
	var add []slog.Attr
	if id := From(ctx); needOp && id != "" {
		add = append(add, slog.String(KeyOpID, id))
	}
	if vm := VM(ctx); needVM && vm != "" {
		add = append(add, slog.String(KeyVM, vm))
	}
	if len(add) == 0 {
		return h.inner.Handle(ctx, r)
	}
	r = r.Clone()
	r.AddAttrs(add...)
	return h.inner.Handle(ctx, r)
}

func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.inner = h.inner.WithAttrs(attrs)
	for _, a := range attrs {
		switch a.Key {
		case KeyOpID:
			c.hasOpID = true
		case KeyVM:
			c.hasVM = true
		}
	}
	return &c
}

func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.inner = h.inner.WithGroup(name)
	return &c
}

// Logger returns lg with the op_id and vm carried by ctx bound to it, for an
// object that logs without a context and lives exactly as long as one
// request (an image's layer applier).
func Logger(ctx context.Context, lg *slog.Logger) *slog.Logger {
	if lg == nil {
		return nil
	}
	if id := From(ctx); id != "" {
		lg = lg.With(KeyOpID, id)
	}
	if vm := VM(ctx); vm != "" {
		lg = lg.With(KeyVM, vm)
	}
	return lg
}
