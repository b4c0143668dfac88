package model

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidateVMName(t *testing.T) {
	good := []string{"a", "web", "web-1", "0", "a1-b2-c3", strings.Repeat("a", 63)}
	for _, n := range good {
		if err := ValidateVMName(n); err != nil {
			t.Errorf("ValidateVMName(%q) = %v, want nil", n, err)
		}
	}
	bad := map[string]string{
		"":                      "empty",
		"-web":                  "starts or ends",
		"web-":                  "starts or ends",
		"Web":                   "upper-case",
		"web.1":                 `'.'`,
		"web_1":                 `'_'`,
		"web 1":                 `' '`,
		"wéb":                   "byte 0xc3",
		"a/b":                   `'/'`,
		strings.Repeat("a", 64): "64 characters",
	}
	for n, want := range bad {
		err := ValidateVMName(n)
		if !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateVMName(%q) = %v, want ErrInvalidName", n, err)
			continue
		}
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "1-63 characters of a-z, 0-9 and '-'") {
			t.Errorf("ValidateVMName(%q) = %q, want it to say %q and what is allowed", n, err, want)
		}
	}
}

func TestValidateArtifactName(t *testing.T) {
	for _, n := range []string{"bookworm", "debian-6.1.0-56-cloud-amd64", "ubuntu_24.04", "x", strings.Repeat("k", 128)} {
		if err := ValidateArtifactName(n); err != nil {
			t.Errorf("ValidateArtifactName(%q) = %v, want nil", n, err)
		}
	}
	for _, n := range []string{"", ".", "..", ".hidden", "x.", "_x", "a/b", "../etc", "A", "a b", strings.Repeat("k", 129)} {
		if err := ValidateArtifactName(n); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateArtifactName(%q) = %v, want ErrInvalidName", n, err)
		}
	}
}

func TestTransitions(t *testing.T) {
	allowed := map[[2]VMState]bool{
		{StateCreating, StateStarting}:  true,
		{StateCreating, StateStopped}:   true,
		{StateStarting, StateRunning}:   true,
		{StateStarting, StateStopping}:  true,
		{StateRunning, StateStopping}:   true,
		{StateRunning, StateStopped}:    true,
		{StateStopping, StateStopped}:   true,
		{StateStopped, StateStarting}:   true,
		{StateError, StateStarting}:     true,
		{StateError, StateStopped}:      true,
		{StateRunning, StateSuspended}:  true,
		{StateSuspended, StateStarting}: true,
		{StateSuspended, StateRunning}:  true,
		{StateSuspended, StateStopped}:  true,
	}
	for _, from := range States {
		allowed[[2]VMState{from, StateError}] = true
	}
	for _, from := range States {
		for _, to := range States {
			want := allowed[[2]VMState{from, to}]
			if got := CanTransition(from, to); got != want {
				t.Errorf("CanTransition(%s, %s) = %v, want %v", from, to, got, want)
			}
			err := CheckTransition(from, to)
			if want != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidTransition)) {
				t.Errorf("CheckTransition(%s, %s) = %v", from, to, err)
			}
		}
	}
	if CanTransition("bogus", StateError) || CanTransition(StateStopped, "bogus") {
		t.Error("unknown states must not transition")
	}
	err := CheckTransition(StateStopped, StateRunning)
	if err == nil || !strings.Contains(err.Error(), "stopped → running") || !strings.Contains(err.Error(), "starting") {
		t.Errorf("CheckTransition message = %v, want it to name the move and the allowed targets", err)
	}
}

func TestNewVMID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		id, err := NewVMID()
		if err != nil {
			t.Fatal(err)
		}
		if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("NewVMID() = %q, want 16 hex digits", id)
		}
		if seen[id] {
			t.Fatalf("NewVMID() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestVMValidateAndJSON(t *testing.T) {
	vm := VM{ID: "0123456789abcdef", Name: "web", State: StateCreating, VMM: VMMQEMU, InitMode: InitFast, Network: NetworkIsolated,
		CPUs: 2, MemoryMiB: 1024, PIDStartTime: 1 << 40, CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	if err := vm.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	for name, mutate := range map[string]func(*VM){
		"no id":       func(v *VM) { v.ID = "" },
		"path id":     func(v *VM) { v.ID = "../etc" },
		"upper id":    func(v *VM) { v.ID = "ABCDEF" },
		"bad name":    func(v *VM) { v.Name = "Web" },
		"bad state":   func(v *VM) { v.State = "paused" },
		"bad vmm":     func(v *VM) { v.VMM = "kvmtool" },
		"bad init":    func(v *VM) { v.InitMode = "systemd" },
		"bad network": func(v *VM) { v.Network = "bridged" },
		"neg mem":     func(v *VM) { v.MemoryMiB = -1 },
	} {
		v := vm
		mutate(&v)
		if err := v.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil, want an error", name)
		}
	}
	b, err := json.Marshal(vm)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, key := range []string{`"memory_mib":1024`, `"pid_start_time":1099511627776`, `"init_mode":"fast"`, `"created_at":"2025-01-02T03:04:05Z"`} {
		if !strings.Contains(s, key) {
			t.Errorf("json %s lacks %s", s, key)
		}
	}
	if strings.Contains(s, "started_at") {
		t.Errorf("json %s has a zero started_at", s)
	}
	var back VM
	if err := json.Unmarshal(b, &back); err != nil || back.PIDStartTime != vm.PIDStartTime || !back.CreatedAt.Equal(vm.CreatedAt) {
		t.Errorf("json round trip = %+v, %v", back, err)
	}
}

func TestKinds(t *testing.T) {
	for k, want := range map[VMMKind][2]bool{ // Valid, ValidPreference
		VMMQEMU: {true, true}, VMMFirecracker: {true, true}, VMMAuto: {false, true}, "": {false, true}, "kvmtool": {false, false}, "QEMU": {false, false},
	} {
		if k.Valid() != want[0] || k.ValidPreference() != want[1] {
			t.Errorf("%q: Valid %v ValidPreference %v, want %v", k, k.Valid(), k.ValidPreference(), want)
		}
	}
	for _, k := range VMMKinds {
		if !k.Valid() {
			t.Errorf("VMMKinds lists %q, which is not valid", k)
		}
	}
	if !InitFast.Valid() || !InitImage.Valid() || InitMode("systemd").Valid() || InitMode("").Valid() {
		t.Error("init mode validity wrong")
	}
	if !TransportVirtioSerial.Valid() || !TransportVsock.Valid() || AgentTransport("vhost-vsock").Valid() {
		t.Error("agent transport validity wrong")
	}
	if got := JoinVMMs([]VMMKind{VMMQEMU, VMMFirecracker}, ", "); got != "qemu, firecracker" {
		t.Errorf("JoinVMMs = %q", got)
	}
}
