// Package guestnet holds the pure address-plan arithmetic shared by the daemon
// (which leases addresses), the root helper (which builds the bridge) and the
// guest config writer: the subnet, its gateway, per-VM tap names and MACs.
// It touches neither the network nor the store.
package guestnet

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// DefaultSubnet is the pool banger uses unless configured otherwise. It is a
// /24 chosen away from the ranges most likely to be in use already: Docker's
// default pools (172.17–172.31/16, 192.168/16 in /20s), home routers
// (192.168.x, 10.0.x, 10.1.x), common VPNs (10.8.x, 10.10.x) and CGNAT
// (100.64/10, used by Tailscale). Change it with
// `banger config set network.subnet CIDR` if it clashes anyway.
var DefaultSubnet = netip.MustParsePrefix("10.213.77.0/24")

// TapPrefix starts every tap name banger creates; nothing else uses it.
const TapPrefix = "bt-"

// tapHashLen keeps "bt-" + hash within the kernel's 15-byte IFNAMSIZ limit.
const tapHashLen = 12

// Sentinel errors callers test with errors.Is.
var (
	ErrInvalidSubnet = errors.New("invalid subnet")
	ErrOutOfPool     = errors.New("address outside the guest subnet")
)

// privateRanges are the only ranges a guest subnet may come from: a subnet
// elsewhere would NAT or shadow public addresses.
var privateRanges = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
}

// Plan is the guest network: the subnet and the host's gateway address on it
// (the bridge address, also where vmdns answers).
type Plan struct {
	Subnet  netip.Prefix
	Gateway netip.Addr
}

// ValidateSubnet checks that p is a masked IPv4 private prefix between /16
// and /29 (room for the gateway and at least a few guests).
func ValidateSubnet(p netip.Prefix) error {
	if !p.IsValid() || !p.Addr().Is4() {
		return fmt.Errorf("%w: %q is not an IPv4 prefix", ErrInvalidSubnet, p)
	}
	if p != p.Masked() {
		return fmt.Errorf("%w: %s has host bits set (did you mean %s?)", ErrInvalidSubnet, p, p.Masked())
	}
	if p.Bits() < 16 || p.Bits() > 29 {
		return fmt.Errorf("%w: %s must be between /16 and /29", ErrInvalidSubnet, p)
	}
	for _, r := range privateRanges {
		if r.Bits() <= p.Bits() && r.Contains(p.Addr()) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s is not inside a private range (10/8, 172.16/12, 192.168/16, 100.64/10)", ErrInvalidSubnet, p)
}

// NewPlan validates subnet and derives its gateway: the first host address.
func NewPlan(subnet netip.Prefix) (Plan, error) {
	if err := ValidateSubnet(subnet); err != nil {
		return Plan{}, err
	}
	return Plan{Subnet: subnet, Gateway: subnet.Addr().Next()}, nil
}

// Broadcast is the subnet's last address.
func (p Plan) Broadcast() netip.Addr {
	a := p.Subnet.Addr().As4()
	host := uint32(1)<<(32-p.Subnet.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// GuestRange returns the first and last addresses a guest may lease: every
// host address except the gateway.
func (p Plan) GuestRange() (first, last netip.Addr) {
	return p.Gateway.Next(), p.Broadcast().Prev()
}

// CheckGuestAddr reports whether a may be leased to a guest: inside the
// subnet, not the network, broadcast or gateway address.
func (p Plan) CheckGuestAddr(a netip.Addr) error {
	if !a.Is4() || !p.Subnet.Contains(a) {
		return fmt.Errorf("%w: %s is not in %s", ErrOutOfPool, a, p.Subnet)
	}
	switch a {
	case p.Subnet.Addr():
		return fmt.Errorf("%w: %s is the network address", ErrOutOfPool, a)
	case p.Gateway:
		return fmt.Errorf("%w: %s is the gateway", ErrOutOfPool, a)
	case p.Broadcast():
		return fmt.Errorf("%w: %s is the broadcast address", ErrOutOfPool, a)
	}
	return nil
}

// TapName is the host tap device for a VM: "bt-" and 12 hex digits of a hash
// of the id, so any id fits the 15-byte interface-name limit and the name is
// stable across daemon restarts.
func TapName(vmID string) string {
	sum := sha256.Sum256([]byte("banger-tap\x00" + vmID))
	return TapPrefix + hex.EncodeToString(sum[:])[:tapHashLen]
}

// MACForVM is the guest NIC's MAC: locally administered, unicast and
// deterministic from the VM id (so a restarted VM keeps its neighbour entries).
func MACForVM(vmID string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("banger-mac\x00" + vmID))
	mac := make(net.HardwareAddr, 6)
	copy(mac, sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01 // locally administered, unicast
	return mac
}

// GuestNetwork is what a guest needs to configure its interface statically.
type GuestNetwork struct {
	Address netip.Prefix // the lease with the subnet's prefix length
	Gateway netip.Addr
	DNS     []netip.Addr
}

// GuestConfigNetwork builds a guest's static network config from its lease.
// With no dns servers given, the guest uses the gateway, where vmdns answers
// VM names and forwards everything else.
func GuestConfigNetwork(lease netip.Addr, plan Plan, dns []netip.Addr) (GuestNetwork, error) {
	if err := plan.CheckGuestAddr(lease); err != nil {
		return GuestNetwork{}, fmt.Errorf("guest network config: %w", err)
	}
	servers := dns
	if len(servers) == 0 {
		servers = []netip.Addr{plan.Gateway}
	}
	for _, s := range servers {
		if !s.IsValid() {
			return GuestNetwork{}, fmt.Errorf("guest network config: invalid dns server")
		}
	}
	return GuestNetwork{
		Address: netip.PrefixFrom(lease, plan.Subnet.Bits()),
		Gateway: plan.Gateway,
		DNS:     append([]netip.Addr(nil), servers...),
	}, nil
}
