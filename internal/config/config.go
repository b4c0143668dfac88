// Package config reads the owner's banger settings from config.toml
// (paths.User.ConfigFile). Every key is optional; a missing file means the
// defaults. Unknown keys are an error naming the key, so a typo never
// silently falls back to a default.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/guestnet"
	"github.com/bangerdev/banger/internal/hostnat"
	"github.com/bangerdev/banger/internal/jailer"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/policy"
	"github.com/bangerdev/banger/internal/vmdns"
)

// Defaults.
const (
	DefaultVMM    = model.VMMAuto
	DefaultBridge = hostnat.DefaultBridge
	DefaultDomain = vmdns.DefaultDomain
)

// ErrInvalid is wrapped by every load or validation failure.
var ErrInvalid = errors.New("invalid banger config")

// maxFileBytes bounds what Load reads: a config file is a few lines.
const maxFileBytes = 1 << 20

// Config is the owner's settings.
type Config struct {
	// VMM is the default VMM for new VMs: auto, qemu or firecracker.
	VMM     model.VMMKind `toml:"vmm" json:"vmm"`
	Network Network       `toml:"network" json:"network"`
	DNS     DNS           `toml:"dns" json:"dns"`
	Debian  Debian        `toml:"debian" json:"debian"`
	Copy    Copy          `toml:"copy" json:"copy"`
	MCP     MCP           `toml:"mcp" json:"mcp"`
	Policy  Policy        `toml:"policy" json:"policy"`
	// Sessions bounds detached exec sessions (vm exec --detach).
	Sessions Sessions `toml:"sessions" json:"sessions"`
	// Firecracker is how the root helper runs Firecracker's jailer. Root
	// acts on it only from root's own config (a root daemon passes it to
	// the helper it spawns; a system install's unit carries the helper's
	// flags); an owner's file informs doctor and the driver's checks.
	Firecracker jailer.Config `toml:"firecracker" json:"firecracker"`
}

// Sessions configures detached exec sessions, which the guest agent keeps.
type Sessions struct {
	// ReplayBytes is the output each session keeps for vm attach to replay
	// (guest memory: at most agentproto.MaxReplayBytes).
	ReplayBytes int64 `toml:"replay_bytes" json:"replay_bytes"`
}

// Policy is the default policy of new VMs (package policy applies it);
// create flags add to it, never remove from it. The metadata range is
// dropped for every VM whatever this says.
type Policy struct {
	DenyEgress  []string `toml:"deny_egress" json:"deny_egress"`   // IPv4 CIDRs dropped for VM traffic
	DenyPrivate bool     `toml:"deny_private" json:"deny_private"` // also drop RFC 1918 and 100.64.0.0/10
	ForwardDeny []int    `toml:"forward_deny" json:"forward_deny"` // guest ports vm forward refuses
}

// VMPolicy is p as a VM's stored policy.
func (p Policy) VMPolicy() model.VMPolicy {
	return model.VMPolicy{DenyEgress: p.DenyEgress, DenyPrivate: p.DenyPrivate, ForwardDeny: p.ForwardDeny}
}

// MCP bounds what requests from `banger mcp` (an agent driving banger) may
// do. The daemon enforces them on requests marked with that origin, so a
// client cannot lift them.
type MCP struct {
	// MaxVMs is how many VMs created through MCP may exist at once.
	MaxVMs int `toml:"max_vms" json:"max_vms"`
	// MaxMemory is the most memory, in MiB, one MCP-created VM may have.
	MaxMemory int `toml:"max_memory" json:"max_memory"`
	// AllowNetwork false refuses MCP-created VMs on the shared network
	// (reaching other VMs) and port forwards from MCP; see docs/mcp.md.
	AllowNetwork bool `toml:"allow_network" json:"allow_network"`
	// DefaultTimeout bounds an MCP exec that asks for no timeout (and caps
	// one that asks for more), as a Go duration ("10m").
	DefaultTimeout string `toml:"default_timeout" json:"default_timeout"`
}

// MCP defaults.
const (
	DefaultMCPMaxVMs         = 4
	DefaultMCPMaxMemory      = 2048
	DefaultMCPDefaultTimeout = "10m"
	maxMCPTimeout            = 24 * time.Hour
)

// Timeout parses mcp.default_timeout.
func (m MCP) Timeout() (time.Duration, error) {
	d, err := time.ParseDuration(m.DefaultTimeout)
	if err != nil {
		return 0, fmt.Errorf("mcp.default_timeout %q: %w (write a duration such as \"10m\")", m.DefaultTimeout, err)
	}
	if d <= 0 || d > maxMCPTimeout {
		return 0, fmt.Errorf("mcp.default_timeout %q must be above 0 and at most %s", m.DefaultTimeout, maxMCPTimeout)
	}
	return d, nil
}

// Copy bounds what `vm cp` accepts from a guest (whose archive is hostile
// input); 0 means agentproto's defaults.
type Copy struct {
	MaxBytes   int64 `toml:"max_bytes" json:"max_bytes"`     // total file bytes of one copy out
	MaxEntries int   `toml:"max_entries" json:"max_entries"` // entries of one copy out
}

// Network is the host side of the guest network (the root helper's).
type Network struct {
	Subnet string `toml:"subnet" json:"subnet"` // guest pool CIDR
	Bridge string `toml:"bridge" json:"bridge"` // bridge device, must start with "banger"
}

// DNS configures VM name resolution.
type DNS struct {
	Domain string `toml:"domain" json:"domain"` // VMs answer as NAME.<domain>
}

// Debian configures Debian archive access (kernels, images).
type Debian struct {
	Mirror string `toml:"mirror" json:"mirror"` // "" = the host's apt sources
}

// Default returns the built-in settings.
func Default() Config {
	return Config{
		VMM:     DefaultVMM,
		Network: Network{Subnet: guestnet.DefaultSubnet.String(), Bridge: DefaultBridge},
		DNS:     DNS{Domain: DefaultDomain},
		Copy:    Copy{MaxBytes: agentproto.DefaultCopyMaxBytes, MaxEntries: agentproto.DefaultCopyMaxEntries},
		MCP: MCP{MaxVMs: DefaultMCPMaxVMs, MaxMemory: DefaultMCPMaxMemory, AllowNetwork: true,
			DefaultTimeout: DefaultMCPDefaultTimeout},
		Policy:      Policy{DenyEgress: []string{}, ForwardDeny: []int{}}, // [] not null in config show --json
		Sessions:    Sessions{ReplayBytes: agentproto.DefaultReplayBytes},
		Firecracker: jailer.Default(),
	}
}

// Load reads path over the defaults and validates the result. A missing
// file gives the defaults.
func Load(path string) (Config, error) {
	cfg := Default()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("read config %s: %w", path, err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, maxFileBytes+1)); err != nil {
		return Config{}, fmt.Errorf("read config %s: %w", path, err)
	}
	if buf.Len() > maxFileBytes {
		return Config{}, fmt.Errorf("%w: %s is larger than %d bytes", ErrInvalid, path, maxFileBytes)
	}
	if err := Parse(buf.Bytes(), &cfg); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes TOML over cfg (keys absent from data keep cfg's values) and
// validates the result.
func Parse(data []byte, cfg *Config) error {
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			keys := make([]string, 0, len(strict.Errors))
			for _, e := range strict.Errors {
				keys = append(keys, strings.Join(e.Key(), "."))
			}
			return fmt.Errorf("%w: unknown key %s (known: vmm, network.subnet, network.bridge, dns.domain, debian.mirror, copy.max_bytes, copy.max_entries, mcp.max_vms, mcp.max_memory, mcp.allow_network, mcp.default_timeout, policy.deny_egress, policy.deny_private, policy.forward_deny, sessions.replay_bytes, firecracker.binary, firecracker.jailer_binary, firecracker.uid_start, firecracker.uid_count, firecracker.cgroup_version, firecracker.chroot_base)", ErrInvalid, strings.Join(keys, ", "))
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return fmt.Errorf("%w: line %d column %d: %s", ErrInvalid, row, col, de.Error())
		}
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return cfg.Validate()
}

// Validate checks every setting.
func (c Config) Validate() error {
	var errs []error
	if c.VMM == "" || !c.VMM.ValidPreference() {
		errs = append(errs, fmt.Errorf("vmm %q must be %s, %s or %s", c.VMM, model.VMMAuto, model.VMMQEMU, model.VMMFirecracker))
	}
	if _, err := c.Subnet(); err != nil {
		errs = append(errs, err)
	}
	if err := hostnat.ValidateBridgeName(c.Network.Bridge); err != nil {
		errs = append(errs, fmt.Errorf("network.bridge: %w", err))
	}
	if err := vmdns.ValidateDomain(c.DNS.Domain); err != nil {
		errs = append(errs, fmt.Errorf("dns.domain: %w", err))
	}
	if c.Debian.Mirror != "" {
		u, err := url.Parse(c.Debian.Mirror)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			errs = append(errs, fmt.Errorf("debian.mirror %q must be an http(s) URL without credentials, query or fragment", c.Debian.Mirror))
		}
	}
	if _, err := policy.Normalize(c.Policy.VMPolicy()); err != nil {
		errs = append(errs, fmt.Errorf("policy: %w", err))
	}
	if c.Copy.MaxBytes < 0 || c.Copy.MaxEntries < 0 {
		errs = append(errs, fmt.Errorf("copy.max_bytes and copy.max_entries must not be negative (0 means the default)"))
	}
	if c.Sessions.ReplayBytes < 1 || c.Sessions.ReplayBytes > agentproto.MaxReplayBytes {
		errs = append(errs, fmt.Errorf("sessions.replay_bytes %d must be between 1 and %d (16 MiB: the ring lives in guest memory)", c.Sessions.ReplayBytes, agentproto.MaxReplayBytes))
	}
	if c.MCP.MaxVMs < 1 {
		errs = append(errs, fmt.Errorf("mcp.max_vms %d must be at least 1", c.MCP.MaxVMs))
	}
	if c.MCP.MaxMemory < 128 {
		errs = append(errs, fmt.Errorf("mcp.max_memory %d must be at least 128 (MiB)", c.MCP.MaxMemory))
	}
	if _, err := c.MCP.Timeout(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Firecracker.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// Subnet parses network.subnet and checks it is a usable guest pool.
func (c Config) Subnet() (netip.Prefix, error) {
	p, err := netip.ParsePrefix(c.Network.Subnet)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("network.subnet %q: %w", c.Network.Subnet, err)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("network.subnet %q has host bits set (did you mean %s?)", c.Network.Subnet, p.Masked())
	}
	if _, err := guestnet.NewPlan(p); err != nil {
		return netip.Prefix{}, fmt.Errorf("network.subnet: %w", err)
	}
	return p, nil
}
