package vmlife

import "testing"

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
