package kvmprobe

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeHost builds a sysfs/procfs/dev tree with the given modules loaded.
func fakeHost(t *testing.T, withDevKVM bool, modules ...string) Prober {
	t.Helper()
	root := t.TempDir()
	for _, m := range modules {
		if err := os.MkdirAll(filepath.Join(root, "sys/module", m), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must(t, os.MkdirAll(filepath.Join(root, "proc/sys/kernel/random"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "proc/sys/kernel/random/boot_id"), []byte("boot-1\n"), 0o644))
	p := Prober{DevKVM: filepath.Join(root, "dev/kvm"), SysRoot: filepath.Join(root, "sys"), ProcRoot: filepath.Join(root, "proc")}
	if withDevKVM {
		must(t, os.MkdirAll(filepath.Dir(p.DevKVM), 0o755))
		// A regular file: opens, but the KVM ioctl fails with ENOTTY.
		must(t, os.WriteFile(p.DevKVM, nil, 0o600))
	}
	return p
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestProbeVerdicts(t *testing.T) {
	cases := []struct {
		name    string
		dev     bool
		modules []string
		reason  string
	}{
		{"no device", false, []string{"kvm", "kvm_intel"}, "absent"},
		{"pvm", true, []string{"kvm", "kvm_pvm"}, "KVM is PVM (paravirtual nested): cannot run a standard kernel"},
		{"pvm beats vendor", true, []string{"kvm", "kvm_intel", "kvm_pvm"}, "PVM"},
		{"no vendor module", true, []string{"kvm"}, "no hardware KVM module"},
		{"device does not answer", true, []string{"kvm", "kvm_amd"}, "KVM_GET_API_VERSION"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := fakeHost(t, c.dev, c.modules...).Probe()
			if r.Usable || r.Accel != AccelTCG {
				t.Fatalf("got %+v, want unusable with tcg", r)
			}
			if !strings.Contains(r.Reason, c.reason) {
				t.Fatalf("reason %q does not mention %q", r.Reason, c.reason)
			}
			if !strings.HasSuffix(r.String(), "; using TCG software emulation") {
				t.Fatalf("doctor text %q", r.String())
			}
		})
	}
}

// TestProbeThisHost checks the verdict is consistent with what this host has:
// a PVM host must never be reported usable.
func TestProbeThisHost(t *testing.T) {
	r := Prober{}.Probe()
	t.Logf("this host: %s", r)
	_, pvmErr := os.Stat("/sys/module/kvm_pvm")
	if pvmErr == nil && r.Usable {
		t.Fatalf("kvm_pvm is loaded but the probe says usable: %+v", r)
	}
	if r.Usable != (r.Accel == AccelKVM) {
		t.Fatalf("accel %q disagrees with usable=%v", r.Accel, r.Usable)
	}
}

func TestCachedKeyedByBootID(t *testing.T) {
	p := fakeHost(t, true, "kvm", "kvm_pvm")
	cache := filepath.Join(t.TempDir(), "sub", "kvm.json")
	r, err := p.Cached(cache)
	must(t, err)
	if r.Usable || !strings.Contains(r.Reason, "PVM") {
		t.Fatalf("first probe: %+v", r)
	}
	var c cacheFile
	b, err := os.ReadFile(cache)
	must(t, err)
	must(t, json.Unmarshal(b, &c))
	if c.BootID != "boot-1" || c.Result != r {
		t.Fatalf("cache holds %+v", c)
	}

	// Same boot: the cache is believed even if the host looks different now.
	must(t, os.Remove(filepath.Join(p.SysRoot, "module/kvm_pvm")))
	r2, err := p.Cached(cache)
	must(t, err)
	if r2 != r {
		t.Fatalf("same boot id re-probed: %+v vs %+v", r2, r)
	}

	// New boot: probed again.
	must(t, os.WriteFile(filepath.Join(p.ProcRoot, "sys/kernel/random/boot_id"), []byte("boot-2\n"), 0o644))
	r3, err := p.Cached(cache)
	must(t, err)
	if !strings.Contains(r3.Reason, "no hardware KVM module") {
		t.Fatalf("new boot not re-probed: %+v", r3)
	}

	// Corrupt cache: replaced, not an error.
	must(t, os.WriteFile(cache, []byte("{garbage"), 0o644))
	r4, err := p.Cached(cache)
	must(t, err)
	if r4 != r3 {
		t.Fatalf("corrupt cache: %+v", r4)
	}
}
