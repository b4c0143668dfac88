package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/jailer"
)

func write(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadMissingFileGivesDefaults(t *testing.T) {
	cfg, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Fatalf("got %+v, want defaults %+v", cfg, Default())
	}
	if cfg.VMM != "auto" || cfg.Network.Subnet != "10.213.77.0/24" || cfg.Network.Bridge != "banger0" || cfg.DNS.Domain != "banger" || cfg.Debian.Mirror != "" {
		t.Fatalf("defaults changed: %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestLoadOverridesOnlyGivenKeys(t *testing.T) {
	cfg, err := Load(write(t, `
vmm = "qemu"
[network]
subnet = "10.99.0.0/16"
[debian]
mirror = "https://deb.example.org/debian"
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.VMM = "qemu"
	want.Network.Subnet = "10.99.0.0/16"
	want.Debian.Mirror = "https://deb.example.org/debian"
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("got %+v, want %+v", cfg, want)
	}
	if p, err := cfg.Subnet(); err != nil || p.String() != "10.99.0.0/16" {
		t.Fatalf("Subnet() = %v, %v", p, err)
	}
}

func TestLoadRejectsUnknownKeysByName(t *testing.T) {
	for text, key := range map[string]string{
		"vmn = \"qemu\"\n":                       "vmn",
		"[network]\nsubnett = \"10.0.0.0/24\"\n": "network.subnett",
		"[dns]\ndomain = \"x\"\nttl = 5\n":       "dns.ttl",
	} {
		_, err := Load(write(t, text))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "unknown key "+key) {
			t.Errorf("%q: error %v, want unknown key %s", text, err, key)
		}
	}
}

func TestLoadRejectsBadSyntaxAndTypes(t *testing.T) {
	for _, text := range []string{"vmm = \n", "vmm = 3\n", "[network\n"} {
		if _, err := Load(write(t, text)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: error %v, want ErrInvalid", text, err)
		}
	}
}

func TestValidate(t *testing.T) {
	bad := map[string]func(*Config){
		"vmm":              func(c *Config) { c.VMM = "kvmtool" },
		"empty vmm":        func(c *Config) { c.VMM = "" },
		"subnet syntax":    func(c *Config) { c.Network.Subnet = "10.0.0.0/33" },
		"subnet host bits": func(c *Config) { c.Network.Subnet = "10.0.0.5/24" },
		"subnet ipv6":      func(c *Config) { c.Network.Subnet = "fd00::/64" },
		"subnet too small": func(c *Config) { c.Network.Subnet = "10.0.0.0/31" },
		"bridge not ours":  func(c *Config) { c.Network.Bridge = "eth0" },
		"bridge injection": func(c *Config) { c.Network.Bridge = "banger0; rm -rf /" },
		"domain dotted":    func(c *Config) { c.DNS.Domain = "vm.local" },
		"domain upper":     func(c *Config) { c.DNS.Domain = "Banger" },
		"mirror scheme":    func(c *Config) { c.Debian.Mirror = "ftp://deb.debian.org/debian" },
		"mirror creds":     func(c *Config) { c.Debian.Mirror = "https://u:p@deb.debian.org/debian" },
		"mirror no host":   func(c *Config) { c.Debian.Mirror = "https:///debian" },
		"policy cidr":      func(c *Config) { c.Policy.DenyEgress = []string{"10.1.2.3/8"} },
		"policy ipv6":      func(c *Config) { c.Policy.DenyEgress = []string{"fd00::/8"} },
		"policy port":      func(c *Config) { c.Policy.ForwardDeny = []int{0} },
	}
	for name, mut := range bad {
		c := Default()
		mut(&c)
		if err := c.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate() = %v, want ErrInvalid", name, err)
		}
	}
	good := Default()
	good.VMM, good.Network.Bridge, good.DNS.Domain = "firecracker", "banger-dev", "vm"
	good.Debian.Mirror = "http://deb.debian.org/debian"
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Default()
	c.VMM, c.DNS.Domain = "nope", "a.b"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "vmm") || !strings.Contains(err.Error(), "dns.domain") {
		t.Fatalf("Validate() = %v, want both vmm and dns.domain named", err)
	}
}

func TestLoadFromFileReportsPath(t *testing.T) {
	p := write(t, "vmm = \"bogus\"\n")
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("error %v does not name %s", err, p)
	}
}

func TestCopyLimits(t *testing.T) {
	cfg, err := Load(write(t, "[copy]\nmax_bytes = 1048576\n"))
	if err != nil || cfg.Copy.MaxBytes != 1<<20 || cfg.Copy.MaxEntries != Default().Copy.MaxEntries || cfg.Copy.MaxEntries <= 0 {
		t.Fatalf("copy limits: %+v %v", cfg.Copy, err)
	}
	if _, err := Load(write(t, "[copy]\nmax_entries = -1\n")); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "copy.max_entries") {
		t.Fatalf("negative limit: %v", err)
	}
}

func TestMCPLimits(t *testing.T) {
	cfg, err := Load(write(t, "[mcp]\nmax_vms = 2\nmax_memory = 512\nallow_network = false\ndefault_timeout = \"90s\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MCP.MaxVMs != 2 || cfg.MCP.MaxMemory != 512 || cfg.MCP.AllowNetwork {
		t.Fatalf("mcp not read: %+v", cfg.MCP)
	}
	if d, err := cfg.MCP.Timeout(); err != nil || d.Seconds() != 90 {
		t.Fatalf("timeout = %v, %v; want 90s", d, err)
	}
	if d := Default().MCP; d.MaxVMs != DefaultMCPMaxVMs || !d.AllowNetwork || d.DefaultTimeout != DefaultMCPDefaultTimeout {
		t.Fatalf("mcp defaults: %+v", d)
	}
	for _, bad := range []string{
		"[mcp]\nmax_vms = 0\n",
		"[mcp]\nmax_memory = -1\n",
		"[mcp]\ndefault_timeout = \"soon\"\n",
		"[mcp]\ndefault_timeout = \"-1s\"\n",
		"[mcp]\nmax_cpus = 3\n",
	} {
		if _, err := Load(write(t, bad)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "mcp.") {
			t.Errorf("%q: err = %v, want an invalid config error naming the mcp key", bad, err)
		}
	}
}

func TestPolicyDefaults(t *testing.T) {
	cfg, err := Load(write(t, "[policy]\ndeny_private = true\ndeny_egress = [\"203.0.113.0/24\"]\nforward_deny = [5432]\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Policy.VMPolicy()
	if !p.DenyPrivate || len(p.DenyEgress) != 1 || p.DenyEgress[0] != "203.0.113.0/24" || len(p.ForwardDeny) != 1 || p.ForwardDeny[0] != 5432 {
		t.Fatalf("policy = %+v", p)
	}
	if _, err := Load(write(t, "[policy]\ndeny_egress = [\"10.0.0.1/8\"]\n")); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "did you mean 10.0.0.0/8") {
		t.Fatalf("host bits in policy.deny_egress: %v", err)
	}
	if _, err := Load(write(t, "[policy]\nallow_metadata = true\n")); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "policy.allow_metadata") {
		t.Fatalf("unknown policy key: %v", err)
	}
}

// TestFirecrackerSection: [firecracker] parses over the defaults and a bad
// value names its key.
func TestFirecrackerSection(t *testing.T) {
	cfg := Default()
	if err := Parse([]byte("[firecracker]\nbinary = \"/opt/fc/firecracker\"\nuid_start = 3000000\nuid_count = 16\ncgroup_version = \"1\"\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	fc := cfg.Firecracker
	if fc.FirecrackerBinary != "/opt/fc/firecracker" || fc.UIDStart != 3000000 || fc.UIDCount != 16 || fc.CgroupVersion != "1" ||
		fc.JailerBinary != jailer.DefaultJailerBinary || fc.ChrootBase != jailer.DefaultChrootBase {
		t.Fatalf("firecracker = %+v", fc)
	}
	for data, want := range map[string]string{
		"[firecracker]\nuid_count = 0\n":              "firecracker.uid_count",
		"[firecracker]\njailer_binary = \"jailer\"\n": "firecracker.jailer_binary",
		"[firecracker]\nchroot_base = \"/\"\n":        "firecracker.chroot_base",
		"[firecracker]\nuid = 5\n":                    "unknown key firecracker.uid",
	} {
		cfg := Default()
		err := Parse([]byte(data), &cfg)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want ErrInvalid naming %s", data, err, want)
		}
	}
}
