// Package hostnat performs the privileged host network operations behind
// banger's guest network: the bridge, per-VM taps, IPv4 forwarding and the
// nftables NAT table. The root helper exposes these operations; every one
// validates its own arguments (names, owners, addresses) because its caller
// is only as trusted as the owner's uid. It talks netlink and nftables
// directly: no shell, no external commands.
package hostnat

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/bangerdev/banger/internal/guestnet"
)

// Defaults for Config's zero fields.
const (
	DefaultBridge = "banger0"
	DefaultTable  = "banger"
)

// Sentinel errors callers test with errors.Is.
var (
	ErrInvalidName   = errors.New("invalid interface name")
	ErrInvalidOwner  = errors.New("invalid tap owner")
	ErrInvalidConfig = errors.New("invalid network config")
	// ErrInvalidGuest: a tap's guest MAC or address cannot be bound to it.
	ErrInvalidGuest = errors.New("invalid guest identity")
	ErrOutOfPool    = guestnet.ErrOutOfPool
	// ErrSubnetOverlap: the configured subnet clashes with a route or address
	// banger does not own.
	ErrSubnetOverlap = errors.New("guest subnet overlaps an existing host network")
	// ErrNotOurs: an interface with a banger name exists but is not what
	// banger would have created (wrong kind or owner); banger leaves it alone.
	ErrNotOurs = errors.New("interface exists but was not made by banger")
	// ErrNoBridge: a tap was requested before EnsureBridge.
	ErrNoBridge = errors.New("banger bridge does not exist")
)

var (
	// ifaceName is the generic shape every interface name must have.
	ifaceName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,14}$`)
	// bridgeName: the bridge must carry banger's prefix, so a bad config can
	// never make the helper re-address or delete someone else's bridge.
	bridgeName = regexp.MustCompile(`^banger[a-z0-9-]{0,9}$`)
	// tapName matches guestnet.TapName's output (and short test names).
	tapName = regexp.MustCompile(`^bt-[a-z0-9]{1,12}$`)
	// tableName: banger's nftables tables only, never "filter" or "nat".
	tableName = regexp.MustCompile(`^banger[a-z0-9_-]{0,20}$`)
)

// Config names the host side of the guest network.
type Config struct {
	Bridge string       // bridge device, default "banger0"; must start with "banger"
	Subnet netip.Prefix // guest pool, default guestnet.DefaultSubnet
	Table  string       // nftables tables (families inet and bridge), default "banger"
	// StateDir is a root-owned directory for what must outlive the process
	// (the ip_forward value found before banger changed it); "" keeps it in
	// memory only.
	StateDir string
	Logger   *slog.Logger
}

// Network performs the operations for one Config. It is safe for concurrent
// use; operations are serialised.
type Network struct {
	cfg  Config
	plan guestnet.Plan
	log  *slog.Logger

	mu sync.Mutex
	// fwd records the ip_forward value found before banger turned it on,
	// restored by Teardown.
	fwd forwardRecord
}

// New validates cfg (filling defaults) and returns its Network.
func New(cfg Config) (*Network, error) {
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = guestnet.DefaultSubnet
	}
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := ValidateBridgeName(cfg.Bridge); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if !tableName.MatchString(cfg.Table) {
		return nil, fmt.Errorf("%w: nftables table %q must match %s", ErrInvalidConfig, cfg.Table, tableName)
	}
	plan, err := guestnet.NewPlan(cfg.Subnet)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if cfg.StateDir != "" && !filepath.IsAbs(cfg.StateDir) {
		return nil, fmt.Errorf("%w: state dir %q must be absolute", ErrInvalidConfig, cfg.StateDir)
	}
	return &Network{cfg: cfg, plan: plan, log: cfg.Logger, fwd: forwardRecord{dir: cfg.StateDir}}, nil
}

// Config returns the validated config with defaults filled in.
func (n *Network) Config() Config { return n.cfg }

// Plan returns the subnet and gateway.
func (n *Network) Plan() guestnet.Plan { return n.plan }

// ValidateBridgeName accepts banger's own bridge names only.
func ValidateBridgeName(name string) error {
	if !ifaceName.MatchString(name) || !bridgeName.MatchString(name) {
		return fmt.Errorf("%w: bridge %q must match %s", ErrInvalidName, printable(name), bridgeName)
	}
	return nil
}

// ValidateTapName accepts banger tap names only ("bt-" and up to 12
// lower-case letters or digits, as guestnet.TapName makes them).
func ValidateTapName(name string) error {
	if !ifaceName.MatchString(name) || !tapName.MatchString(name) {
		return fmt.Errorf("%w: tap %q must match %s", ErrInvalidName, printable(name), tapName)
	}
	return nil
}

// validateOwner accepts a real uid and gid: non-negative and not the
// kernel's "unset" value (uint32 -1).
func validateOwner(uid, gid int) error {
	const maxID = 1<<32 - 2
	if uid < 0 || uid > maxID {
		return fmt.Errorf("%w: uid %d", ErrInvalidOwner, uid)
	}
	if gid < 0 || gid > maxID {
		return fmt.Errorf("%w: gid %d", ErrInvalidOwner, gid)
	}
	return nil
}

// CheckGuestAddr reports whether a is a leasable guest address of the pool.
func (n *Network) CheckGuestAddr(a netip.Addr) error { return n.plan.CheckGuestAddr(a) }

// CheckPrefix reports whether p lies entirely inside the pool.
func (n *Network) CheckPrefix(p netip.Prefix) error {
	if !p.IsValid() || !p.Addr().Is4() || p.Bits() < n.plan.Subnet.Bits() || !n.plan.Subnet.Contains(p.Addr()) {
		return fmt.Errorf("%w: %s is not inside %s", ErrOutOfPool, p, n.plan.Subnet)
	}
	return nil
}

// printable quotes names safely for error messages (a name may be hostile).
func printable(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
