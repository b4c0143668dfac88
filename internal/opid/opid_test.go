package opid_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/opid"
)

func newLogger(buf *bytes.Buffer) *slog.Logger {
	return slog.New(opid.NewHandler(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
}

func TestHandlerAddsOpIDAndVMFromContext(t *testing.T) {
	var buf bytes.Buffer
	lg := newLogger(&buf)
	ctx := opid.WithVM(opid.With(context.Background(), "op-abc"), "dev")
	lg.InfoContext(ctx, "hello", "k", 1)
	lg.With("component", "x").DebugContext(ctx, "second")
	lg.Info("no context") // context.Background: nothing to add
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 lines, got %q", buf.String())
	}
	for _, l := range lines[:2] {
		if strings.Count(l, "op_id=op-abc") != 1 || strings.Count(l, "vm=dev") != 1 {
			t.Errorf("line lacks op_id/vm exactly once: %s", l)
		}
	}
	if strings.Contains(lines[2], "op_id=") || strings.Contains(lines[2], "vm=") {
		t.Errorf("line without a context got attributes: %s", lines[2])
	}
}

// A logger or record that already names op_id or vm keeps its own, once.
func TestHandlerDoesNotDuplicate(t *testing.T) {
	var buf bytes.Buffer
	lg := newLogger(&buf)
	ctx := opid.WithVM(opid.With(context.Background(), "op-ctx"), "ctxvm")
	lg.With("op_id", "op-own").InfoContext(ctx, "a")
	lg.InfoContext(ctx, "b", "vm", "own")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", buf.String())
	}
	if strings.Count(lines[0], "op_id=") != 1 || !strings.Contains(lines[0], "op_id=op-own") || !strings.Contains(lines[0], "vm=ctxvm") {
		t.Errorf("line a: %s", lines[0])
	}
	if strings.Count(lines[1], "vm=") != 1 || !strings.Contains(lines[1], "vm=own") || !strings.Contains(lines[1], "op_id=op-ctx") {
		t.Errorf("line b: %s", lines[1])
	}
}

func TestNewAndValid(t *testing.T) {
	id := opid.New()
	if !strings.HasPrefix(id, "op-") || len(id) != 15 || !opid.Valid(id) {
		t.Fatalf("New() = %q", id)
	}
	if id == opid.New() {
		t.Fatal("two New() ids are equal")
	}
	if bg := opid.NewPrefixed("bg-dns"); !strings.HasPrefix(bg, "bg-dns-") || !opid.Valid(bg) {
		t.Fatalf("NewPrefixed = %q", bg)
	}
	for _, bad := range []string{"", "has space", "a\nb", "op_id=x y", strings.Repeat("a", 65), "ü"} {
		if opid.Valid(bad) {
			t.Errorf("Valid(%q) = true", bad)
		}
	}
	if opid.From(context.Background()) != "" || opid.VM(context.Background()) != "" {
		t.Fatal("empty context carries values")
	}
}

func TestLoggerBindsContext(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewTextHandler(&buf, nil)) // no Handler: Logger binds the values itself
	ctx := opid.WithVM(opid.With(context.Background(), "op-bound"), "dev")
	opid.Logger(ctx, base).Info("applied")
	opid.Logger(context.Background(), base).Info("plain")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "op_id=op-bound") || !strings.Contains(lines[0], "vm=dev") || strings.Contains(lines[1], "op_id") {
		t.Fatalf("lines: %q", lines)
	}
	if opid.Logger(ctx, nil) != nil {
		t.Fatal("Logger(ctx, nil) is not nil")
	}
}
