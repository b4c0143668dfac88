package cli

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/model"
)

func TestSizeShort(t *testing.T) {
	for n, want := range map[int64]string{512: "512B", 512 << 20: "512M", 1 << 30: "1G", 3 << 29: "1.5G", 20 << 30: "20G", 1536: "1.5K"} {
		if got := sizeShort(n); got != want {
			t.Errorf("sizeShort(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestFormatTemplateRows(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	vm := model.VM{Name: "dev", IP: "10.0.0.2", State: model.StateRunning, MemoryMiB: 1024, DiskBytes: 4 << 30,
		CreatedAt: now.Add(-2 * time.Hour), StartedAt: now.Add(-90 * time.Second), StateReason: "x\x1b[2Jy"}
	tp, err := parseFormat("{{.Name}} {{.IP}} {{.Uptime}} {{.Age}} {{.Memory}} {{.Disk}} {{.StateReason}}")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := printFormatted(&b, tp, []vmRow{newVMRow(now, vm)}); err != nil {
		t.Fatal(err)
	}
	// The escape sequence (guest text can reach a state reason) is inert.
	if got, want := b.String(), "dev 10.0.0.2 1m30s 2h0m 1G 4G x\\x1b[2Jy\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	stopped := newVMRow(now, model.VM{Name: "s", State: model.StateStopped, StartedAt: now.Add(-time.Minute)})
	if stopped.Uptime != "-" {
		t.Fatalf("a stopped VM's uptime is %q, want -", stopped.Uptime)
	}
	var ue *UsageError
	if _, err := parseFormat("{{.Name"); !errors.As(err, &ue) {
		t.Fatalf("bad template: %v, want a usage error", err)
	}
	tp, _ = parseFormat("{{.Nope}}")
	if err := printFormatted(&b, tp, []vmRow{newVMRow(now, vm)}); !errors.As(err, &ue) {
		t.Fatalf("unknown field: %v, want a usage error", err)
	}
}
