package hostnat

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/policy"
)

// The guest is root in its VM and every frame it sends is hostile. Banger's
// bridge-family table binds each tap to the one MAC and IPv4 address the
// VM was leased, so a guest cannot ARP-spoof the gateway or another VM, send
// packets from another address, or speak IPv6 (router advertisements) to the
// host; and, unless both VMs are "shared", keeps VMs from talking to each
// other (each still reaches the gateway: SSH, DNS, NAT).
//
//	table bridge banger {
//	  chain prerouting { type filter hook prerouting priority -200; policy accept;
//	    jump taps
//	    iifname "bt-*" drop }          # a tap without rules sends nothing
//	  chain taps {                     # per tap, comment "banger tap bt-x"
//	    iifname TAP ether saddr != MAC drop
//	    iifname TAP ether type arp arp saddr ether != MAC drop
//	    iifname TAP ether type arp arp saddr ip != IP drop
//	    iifname TAP ether type arp accept
//	    iifname TAP ether type ip ip saddr != IP drop
//	    iifname TAP ether type ip ip daddr SUBNET accept  # unless 0.0.0.0/0 is denied
//	    iifname TAP ether type ip ip daddr DENIED drop   # per policy.VM.Egress prefix
//	    iifname TAP ether type ip accept
//	    iifname TAP drop }             # IPv6, VLAN tags, anything else
//	  chain forward { type filter hook forward priority -200; policy accept;
//	    jump isolation }
//	  chain isolation {                # per isolated tap
//	    iifname TAP oifname "bt-*" drop
//	    oifname TAP iifname "bt-*" drop }
//	  chain output { type filter hook output priority -200; policy accept;
//	    oifname "bt-*" ether type ip ip saddr SUBNET ip saddr != GATEWAY drop }
//	}
//
// The output rule stops a guest from routing around isolation through the
// host (its packet for another VM sent to the gateway's MAC): what the host
// sends to a tap comes from the gateway address or from outside the subnet,
// never from another guest's address. (The inet table cannot tell: with
// br_netfilter loaded, bridged frames also pass its forward hook as
// banger0 → banger0.)

// Chain names of the bridge-family table.
const (
	ChainPrerouting = "prerouting"
	ChainTaps       = "taps"
	ChainIsolation  = "isolation"
	ChainOutput     = "output"
)

// tapPrefix is what every banger tap name starts with.
const tapPrefix = "bt-"

// bridgePriorityFilter is NF_BR_PRI_FILTER_BRIDGED.
var bridgePriorityFilter = nftables.ChainPriorityRef(-200)

// TapGuest is the identity the VM behind a tap was given: the only source
// MAC and IPv4 address its frames may carry.
type TapGuest struct {
	MAC net.HardwareAddr
	IP  netip.Addr
	// Shared lets this VM talk to other shared VMs; an isolated VM (the
	// default) reaches only the host.
	Shared bool
	// DenyEgress is policy.VM.Egress: destinations dropped for this VM's
	// traffic. It must pass policy.CheckEgress (masked IPv4, bounded, the
	// metadata range covered); empty means policy's default (metadata).
	DenyEgress []netip.Prefix
}

func (n *Network) checkGuest(g TapGuest) error {
	if len(g.MAC) != 6 || g.MAC[0]&1 != 0 || [6]byte(g.MAC) == [6]byte{} {
		return fmt.Errorf("%w: guest mac %q is not a unicast ethernet address", ErrInvalidGuest, g.MAC)
	}
	if err := n.plan.CheckGuestAddr(g.IP); err != nil {
		return err
	}
	if err := policy.CheckEgress(g.egress()); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidGuest, err)
	}
	return nil
}

// egress is the VM's denied destinations, policy's default when none given.
func (g TapGuest) egress() []netip.Prefix {
	if len(g.DenyEgress) == 0 {
		return policy.VM{}.Egress()
	}
	return g.DenyEgress
}

func (n *Network) bridgeTable() *nftables.Table {
	return &nftables.Table{Name: n.cfg.Table, Family: nftables.TableFamilyBridge}
}

// ensureGuard creates the bridge-family table unless it is there with its
// chains. It never rebuilds an existing one: that would drop the rules of
// taps whose VMs are running.
func (n *Network) ensureGuard(ctx context.Context, c *nftables.Conn) error {
	t := n.bridgeTable()
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyBridge)
	if err != nil {
		return fmt.Errorf("list bridge nftables chains: %w", err)
	}
	have := map[string]bool{}
	for _, ch := range chains {
		if ch.Table.Name == t.Name {
			have[ch.Name] = true
		}
	}
	if have[ChainPrerouting] && have[ChainTaps] && have[ChainForward] && have[ChainIsolation] && have[ChainOutput] {
		return nil
	}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	accept := nftables.ChainPolicyAccept
	pre := c.AddChain(&nftables.Chain{Name: ChainPrerouting, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: bridgePriorityFilter, Policy: &accept})
	taps := c.AddChain(&nftables.Chain{Name: ChainTaps, Table: t})
	fwd := c.AddChain(&nftables.Chain{Name: ChainForward, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: bridgePriorityFilter, Policy: &accept})
	iso := c.AddChain(&nftables.Chain{Name: ChainIsolation, Table: t})
	out := c.AddChain(&nftables.Chain{Name: ChainOutput, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: bridgePriorityFilter, Policy: &accept})
	comment := func(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, s) }
	c.AddRule(&nftables.Rule{Table: t, Chain: pre, UserData: comment("banger: per-tap source checks"),
		Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: taps.Name}}})
	c.AddRule(&nftables.Rule{Table: t, Chain: pre, UserData: comment("banger: a tap without rules sends nothing"),
		Exprs: ifnamePrefix(expr.MetaKeyIIFNAME)})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, UserData: comment("banger: isolated vms reach only the host"),
		Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: iso.Name}}})
	subnet := n.plan.Subnet
	gw := n.plan.Gateway.As4()
	var outRule []expr.Any
	outRule = append(outRule, ifnamePrefix(expr.MetaKeyOIFNAME)[:2]...)
	outRule = append(outRule, etherType(unix.ETH_P_IP)...)
	outRule = append(outRule, ipAddrIn(12, subnet.Addr().As4(), maskBytes(subnet.Bits()))...)
	outRule = append(outRule, field(expr.PayloadBaseNetworkHeader, 12, expr.CmpOpNeq, gw[:])...)
	outRule = append(outRule, &expr.Verdict{Kind: expr.VerdictDrop})
	c.AddRule(&nftables.Rule{Table: t, Chain: out, UserData: comment("banger: no guest-to-guest traffic routed through the host"),
		Exprs: outRule})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("write bridge nftables table %q: %w", t.Name, err)
	}
	n.log.InfoContext(ctx, "created bridge filter table", "table", t.Name)
	return nil
}

// ifnamePrefix matches any interface name starting with tapPrefix, then drops.
func ifnamePrefix(key expr.MetaKey) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(tapPrefix)},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

func tapComment(tap string) string { return "banger tap " + tap }

// guardTap replaces tap's rules with ones for g, in one transaction.
func (n *Network) guardTap(ctx context.Context, tap string, g TapGuest) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	if err := n.ensureGuard(ctx, c); err != nil {
		return err
	}
	if err := n.delTapRules(c, tap); err != nil {
		return err
	}
	t := n.bridgeTable()
	taps := &nftables.Chain{Name: ChainTaps, Table: t}
	iso := &nftables.Chain{Name: ChainIsolation, Table: t}
	ud := userdata.AppendString(nil, userdata.TypeComment, tapComment(tap))
	in := ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, tap)
	mac := []byte(g.MAC)
	ip := g.IP.As4()
	rule := func(ch *nftables.Chain, parts ...[]expr.Any) {
		var all []expr.Any
		for _, p := range parts {
			all = append(all, p...)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: all, UserData: ud})
	}
	drop, accept := verdict(expr.VerdictDrop), verdict(expr.VerdictAccept)
	rule(taps, in, field(expr.PayloadBaseLLHeader, 6, expr.CmpOpNeq, mac), drop)
	rule(taps, in, etherType(unix.ETH_P_ARP), field(expr.PayloadBaseNetworkHeader, 8, expr.CmpOpNeq, mac), drop)
	rule(taps, in, etherType(unix.ETH_P_ARP), field(expr.PayloadBaseNetworkHeader, 14, expr.CmpOpNeq, ip[:]), drop)
	rule(taps, in, etherType(unix.ETH_P_ARP), accept)
	rule(taps, in, etherType(unix.ETH_P_IP), field(expr.PayloadBaseNetworkHeader, 12, expr.CmpOpNeq, ip[:]), drop)
	// Egress policy: the VM's own subnet first (the gateway's SSH and DNS;
	// other guests are the isolation chain's business), then one drop per
	// denied destination. The subnet is private and never link-local, so
	// this accept cannot reach the metadata range. A VM denied everything
	// (0.0.0.0/0, [mcp] allow_network = false) loses the subnet too: it
	// sends no IPv4 at all, the host's gateway address included.
	ipv4 := etherType(unix.ETH_P_IP)
	subnet := n.plan.Subnet
	if !slices.ContainsFunc(g.egress(), func(p netip.Prefix) bool { return p.Bits() == 0 }) {
		rule(taps, in, ipv4, ipAddrIn(16, subnet.Addr().As4(), maskBytes(subnet.Bits())), accept)
	}
	for _, p := range g.egress() {
		rule(taps, in, ipv4, ipAddrIn(16, p.Addr().As4(), maskBytes(p.Bits())), drop)
	}
	rule(taps, in, etherType(unix.ETH_P_IP), accept)
	rule(taps, in, drop)
	if !g.Shared {
		rule(iso, in, ifnamePrefix(expr.MetaKeyOIFNAME))
		rule(iso, ifname(expr.MetaKeyOIFNAME, expr.CmpOpEq, tap), ifnamePrefix(expr.MetaKeyIIFNAME))
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("write source rules for tap %q: %w", tap, err)
	}
	return nil
}

// unguardTap removes tap's rules; a missing table is not an error.
func (n *Network) unguardTap(tap string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	if err := n.delTapRules(c, tap); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("remove source rules of tap %q: %w", tap, err)
	}
	return nil
}

// delTapRules queues the deletion of every rule commented for tap.
func (n *Network) delTapRules(c *nftables.Conn, tap string) error {
	t := n.bridgeTable()
	want := tapComment(tap)
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyBridge)
	if err != nil {
		return fmt.Errorf("list bridge nftables chains: %w", err)
	}
	for _, name := range []string{ChainTaps, ChainIsolation} {
		if !slices.ContainsFunc(chains, func(ch *nftables.Chain) bool { return ch.Table.Name == t.Name && ch.Name == name }) {
			continue
		}
		rules, err := c.GetRules(t, &nftables.Chain{Name: name, Table: t})
		if err != nil {
			return fmt.Errorf("list rules of bridge chain %q: %w", name, err)
		}
		for _, r := range rules {
			if s, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok && s == want {
				if err := c.DelRule(r); err != nil {
					return fmt.Errorf("remove rule of tap %q: %w", tap, err)
				}
			}
		}
	}
	return nil
}

// field compares len(data) bytes at off of base.
func field(base expr.PayloadBase, off uint32, op expr.CmpOp, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: uint32(len(data))},
		&expr.Cmp{Op: op, Register: 1, Data: data},
	}
}

func etherType(t uint16) []expr.Any {
	b := make([]byte, 2)
	binary.BigEndian.PutUint16(b, t)
	return field(expr.PayloadBaseLLHeader, 12, expr.CmpOpEq, b)
}

// disableIPv6 turns IPv6 off on a banger device (and router advertisements
// with it): banger does not route IPv6, so a guest's router advertisement
// must never configure the host. A kernel without IPv6 has nothing to turn
// off.
func disableIPv6(dev string) error {
	if !ifaceName.MatchString(dev) {
		return fmt.Errorf("%w: %q", ErrInvalidName, printable(dev))
	}
	dir := filepath.Join("/proc/sys/net/ipv6/conf", dev)
	for _, kv := range [][2]string{{"accept_ra", "0"}, {"autoconf", "0"}, {"disable_ipv6", "1"}} {
		err := os.WriteFile(filepath.Join(dir, kv[0]), []byte(kv[1]+"\n"), 0o644)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("set ipv6 %s=%s on %q: %w", kv[0], kv[1], dev, err)
		}
	}
	return nil
}

// ipv6Disabled reports whether dev has IPv6 off (true when the kernel has none).
func ipv6Disabled(dev string) bool {
	b, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv6/conf", dev, "disable_ipv6"))
	return errors.Is(err, os.ErrNotExist) || (err == nil && len(b) > 0 && b[0] == '1')
}
