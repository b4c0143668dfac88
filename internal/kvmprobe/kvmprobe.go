// Package kvmprobe decides, once per host boot, whether KVM can really run a
// standard kernel. Opening /dev/kvm is not enough: on PVM hosts (the kvm_pvm
// module, paravirtual nested KVM) /dev/kvm opens and answers ioctls, yet a
// stock kernel dies with "kvm-pvm: INTERNAL_ERROR". The answer is cached in a
// file keyed by the kernel's boot id, so doctor and the daemon agree cheaply.
package kvmprobe

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/system"
)

// Accelerators a VMM can be told to use.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
)

// kvmGetAPIVersion is KVM_GET_API_VERSION (_IO(0xAE, 0x00)); every KVM that
// can run guests answers 12.
const (
	kvmGetAPIVersion = 0xAE00
	kvmAPIVersion    = 12
)

// Result is the probe's verdict.
type Result struct {
	Usable bool   `json:"usable"` // KVM can run a standard kernel
	Accel  string `json:"accel"`  // AccelKVM when Usable, else AccelTCG
	Reason string `json:"reason"` // one human sentence, printed by doctor
}

// String renders the verdict for doctor.
func (r Result) String() string {
	if r.Usable {
		return "KVM usable: " + r.Reason
	}
	return r.Reason + "; using TCG software emulation"
}

// Prober looks at the host through injectable roots, so tests can fake a
// PVM or vendor-module host.
type Prober struct {
	DevKVM   string // default /dev/kvm
	SysRoot  string // default /sys
	ProcRoot string // default /proc
}

func (p Prober) devKVM() string   { return orDefault(p.DevKVM, "/dev/kvm") }
func (p Prober) sysRoot() string  { return orDefault(p.SysRoot, "/sys") }
func (p Prober) procRoot() string { return orDefault(p.ProcRoot, "/proc") }

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

// Probe inspects the host now, without the cache.
func (p Prober) Probe() Result {
	tcg := func(reason string) Result { return Result{Accel: AccelTCG, Reason: reason} }
	if _, err := os.Stat(p.devKVM()); err != nil {
		return tcg(fmt.Sprintf("%s is absent (%v)", p.devKVM(), errors.Unwrap(err)))
	}
	if p.module("kvm_pvm") {
		return tcg("KVM is PVM (paravirtual nested): cannot run a standard kernel")
	}
	vendor := ""
	for _, m := range []string{"kvm_intel", "kvm_amd"} {
		if p.module(m) {
			vendor = m
			break
		}
	}
	if vendor == "" {
		return tcg("no hardware KVM module (kvm_intel or kvm_amd) is loaded")
	}
	f, err := os.OpenFile(p.devKVM(), os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return tcg(fmt.Sprintf("cannot open %s: %v", p.devKVM(), err))
	}
	defer f.Close()
	v, err := unix.IoctlRetInt(int(f.Fd()), kvmGetAPIVersion)
	if err != nil {
		return tcg(fmt.Sprintf("KVM_GET_API_VERSION on %s failed: %v", p.devKVM(), err))
	}
	if v != kvmAPIVersion {
		return tcg(fmt.Sprintf("KVM API version %d, want %d", v, kvmAPIVersion))
	}
	return Result{Usable: true, Accel: AccelKVM, Reason: "hardware KVM (" + vendor + ")"}
}

func (p Prober) module(name string) bool {
	_, err := os.Stat(filepath.Join(p.sysRoot(), "module", name))
	return err == nil
}

// BootID returns the kernel's boot id, which keys the cache.
func (p Prober) BootID() (string, error) {
	b, err := os.ReadFile(filepath.Join(p.procRoot(), "sys/kernel/random/boot_id"))
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

type cacheFile struct {
	BootID string `json:"boot_id"`
	Result Result `json:"result"`
}

// Cached returns the verdict stored in cachePath for this boot, or probes and
// stores it. A missing, stale or corrupt cache is simply replaced; failing to
// write it is not an error (the verdict is still right, just not remembered).
func (p Prober) Cached(cachePath string) (Result, error) {
	bootID, err := p.BootID()
	if err != nil {
		return p.Probe(), err
	}
	if b, err := os.ReadFile(cachePath); err == nil {
		var c cacheFile
		if json.Unmarshal(b, &c) == nil && c.BootID == bootID && c.Result.Accel != "" {
			return c.Result, nil
		}
	}
	r := p.Probe()
	b, _ := json.Marshal(cacheFile{BootID: bootID, Result: r})
	if err := writeAtomic(cachePath, b); err != nil {
		return r, fmt.Errorf("store kvm probe cache: %w", err)
	}
	return r, nil
}

func writeAtomic(path string, b []byte) error {
	return system.WriteFileAtomic(path, b, 0o600)
}
