package vmlife

import (
	"strings"
	"testing"
)

func TestGuestPoweredOff(t *testing.T) {
	for tail, want := range map[string]bool{
		"[   12.3] reboot: Power down\r\n":                           true,
		"foo\n[   12.3] reboot: Power down\n":                        true,
		"[   9.1] reboot: Power down\n[   9.2] Kernel panic\n":       false, // it went on after
		"[   9.1] Kernel panic - not syncing: sysrq triggered crash": false,
		"": false,
	} {
		if got := guestPoweredOff(tail); got != want {
			t.Errorf("guestPoweredOff(%q) = %v, want %v", tail, got, want)
		}
	}
}

func TestKernelPanic(t *testing.T) {
	tail := "[ 19.8] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000200\r\n[ 19.8] CPU: 0 PID: 1\x1b[31m\r\n[ 19.9] R13: 0000\r\n[ 19.9] Kernel Offset: 0x18c00000\r\n"
	if got, want := kernelPanic(tail), "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000200"; got != want {
		t.Fatalf("kernelPanic = %q, want %q", got, want)
	}
	if got := kernelPanic("Kernel panic - not syncing: \x1b[2J\u202eevil" + strings.Repeat("x", 500)); strings.ContainsAny(got, "\x1b\u202e") || len(got) > 200 {
		t.Fatalf("kernelPanic kept control characters or length: %q", got)
	}
	if got := kernelPanic("[ 1.0] all fine\n"); got != "" {
		t.Fatalf("kernelPanic of a console without a panic = %q", got)
	}
}
