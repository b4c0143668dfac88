package hostnat

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/policy"
)

// ipForwardPath is per network namespace: the kernel resolves /proc/sys/net
// against the opener's namespace, so tests in their own netns never touch the
// host's setting.
const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// Chain names inside banger's table.
const (
	ChainPostrouting = "postrouting"
	ChainForward     = "forward"
	ChainInput       = "input"
)

// Up brings the whole host side up: bridge, forwarding, NAT and the
// bridge filter table.
func (n *Network) Up(ctx context.Context) error {
	if err := n.EnsureBridge(ctx); err != nil {
		return err
	}
	if _, err := n.EnsureForwarding(ctx); err != nil {
		return err
	}
	return n.EnsureNAT(ctx)
}

// EnsureForwarding turns on IPv4 forwarding and returns the value it found
// ("0" or "1"). When it changed the value, the previous one is kept so
// Teardown can restore it.
func (n *Network) EnsureForwarding(ctx context.Context) (previous string, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	b, err := os.ReadFile(ipForwardPath)
	if err != nil {
		return "", fmt.Errorf("read ip forwarding setting: %w", err)
	}
	previous = strings.TrimSpace(string(b))
	if previous == "1" {
		return previous, nil
	}
	// Record first: a crash after the write still leaves the way back.
	rec, err := n.fwd.load()
	if err != nil {
		return previous, err
	}
	if rec == "" {
		if err := n.fwd.save(previous); err != nil {
			return previous, err
		}
	}
	if err := os.WriteFile(ipForwardPath, []byte("1\n"), 0o644); err != nil {
		return previous, fmt.Errorf("enable ip forwarding: %w", err)
	}
	n.log.InfoContext(ctx, "enabled ip forwarding", "previous", previous)
	return previous, nil
}

func (n *Network) table() *nftables.Table {
	return &nftables.Table{Name: n.cfg.Table, Family: nftables.TableFamilyINet}
}

// legacyTable is the ip-family table of earlier banger versions, removed
// wherever the inet one is written or torn down.
func (n *Network) legacyTable() *nftables.Table {
	return &nftables.Table{Name: n.cfg.Table, Family: nftables.TableFamilyIPv4}
}

// EnsureNAT (re)builds banger's nftables table in one atomic batch: the old
// table, if any, is deleted and the current rules are written, so re-running
// never duplicates rules and a changed subnet or bridge replaces the old ones.
//
//	table inet banger {
//	  chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//	    meta nfproto ipv4 ip saddr SUBNET oifname != BRIDGE masquerade }
//	  chain forward { type filter hook forward priority filter; policy accept;
//	    iifname BRIDGE meta nfproto ipv6 drop
//	    oifname BRIDGE meta nfproto ipv6 drop
//	    iifname BRIDGE meta nfproto ipv4 ip daddr 169.254.0.0/16 drop
//	    iifname BRIDGE accept
//	    oifname BRIDGE ct state established,related accept
//	    oifname BRIDGE drop }
//	  chain input { type filter hook input priority filter; policy accept;
//	    iifname BRIDGE meta nfproto ipv6 drop
//	    iifname BRIDGE meta nfproto ipv4 ip daddr 169.254.0.0/16 drop }
//	}
//
// The table is inet so IPv6 is refused too: banger routes no IPv6, and the
// bridge and taps have it disabled. An older ip-family table is removed in
// the same transaction.
//
// Guests reach this host directly (not forwarded) and the outside world
// through NAT; other machines cannot route into the guest subnet. An accept
// here cannot override a drop in another table (e.g. Docker's iptables
// FORWARD policy); doctor should report that case.
func (n *Network) EnsureNAT(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	t := n.table()
	// add+delete is nft's "delete if present" idiom; all in one transaction.
	c.AddTable(n.legacyTable())
	c.DelTable(n.legacyTable())
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)

	accept := nftables.ChainPolicyAccept
	post := c.AddChain(&nftables.Chain{Name: ChainPostrouting, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})
	fwd := c.AddChain(&nftables.Chain{Name: ChainForward, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	in := c.AddChain(&nftables.Chain{Name: ChainInput, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})

	br := n.cfg.Bridge
	subnet := n.plan.Subnet
	netAddr, mask := subnet.Addr().As4(), maskBytes(subnet.Bits())
	rule := func(ch *nftables.Chain, comment string, exprs ...[]expr.Any) {
		var all []expr.Any
		for _, e := range exprs {
			all = append(all, e...)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: all,
			UserData: userdata.AppendString(nil, userdata.TypeComment, comment)})
	}
	v4, v6 := nfproto(unix.NFPROTO_IPV4), nfproto(unix.NFPROTO_IPV6)
	// The metadata range (policy.Metadata) is dropped for every guest here,
	// whatever its own egress list says; the per-tap rules drop it again.
	md := policy.Metadata()
	mdAddr, mdMask := md.Addr().As4(), maskBytes(md.Bits())
	rule(post, "banger: masquerade guest traffic leaving the host",
		v4, ipAddrIn(12, netAddr, mask), ifname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, br), verdictMasq())
	rule(fwd, "banger: no ipv6 from guests",
		ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, br), v6, verdict(expr.VerdictDrop))
	rule(fwd, "banger: no ipv6 to guests",
		ifname(expr.MetaKeyOIFNAME, expr.CmpOpEq, br), v6, verdict(expr.VerdictDrop))
	rule(fwd, "banger: guests may not reach link-local (cloud metadata)",
		ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, br), v4, ipAddrIn(16, mdAddr, mdMask), verdict(expr.VerdictDrop))
	rule(fwd, "banger: guests may reach the outside",
		ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, br), verdict(expr.VerdictAccept))
	rule(fwd, "banger: replies to guests",
		ifname(expr.MetaKeyOIFNAME, expr.CmpOpEq, br), ctEstablished(), verdict(expr.VerdictAccept))
	rule(fwd, "banger: no other host may route into the guest subnet",
		ifname(expr.MetaKeyOIFNAME, expr.CmpOpEq, br), verdict(expr.VerdictDrop))
	rule(in, "banger: no ipv6 from guests to the host",
		ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, br), v6, verdict(expr.VerdictDrop))
	rule(in, "banger: guests may not reach link-local on the host",
		ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, br), v4, ipAddrIn(16, mdAddr, mdMask), verdict(expr.VerdictDrop))

	if err := c.Flush(); err != nil {
		return fmt.Errorf("write nftables table %q: %w", n.cfg.Table, err)
	}
	return n.ensureGuard(ctx, c)
}

// ipAddrIn matches the IPv4 address at network-header offset off (12 saddr,
// 16 daddr) against network/mask.
func ipAddrIn(off uint32, network, mask [4]byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask[:], Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: network[:]},
	}
}

// ifname compares the input or output interface name (NUL-padded to IFNAMSIZ).
func ifname(key expr.MetaKey, op expr.CmpOp, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: b},
	}
}

// nfproto matches the packet's layer 3 family (inet tables see both).
func nfproto(family byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
	}
}

func ctEstablished() []expr.Any {
	mask := make([]byte, 4)
	binary.NativeEndian.PutUint32(mask, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED)
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }
func verdictMasq() []expr.Any               { return []expr.Any{&expr.Masq{}} }

func maskBytes(bits int) [4]byte {
	var m [4]byte
	binary.BigEndian.PutUint32(m[:], ^uint32(0)<<(32-bits))
	return m
}

// Teardown removes banger's nftables table, every banger tap and the bridge,
// and restores ip_forward if this Network turned it on (`banger system
// network down`). Missing pieces are not errors; every failure is reported.
func (n *Network) Teardown(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	var errs []error
	if c, err := nftables.New(); err != nil {
		errs = append(errs, fmt.Errorf("open nftables: %w", err))
	} else {
		for _, t := range []*nftables.Table{n.table(), n.legacyTable(), n.bridgeTable()} {
			c.AddTable(t)
			c.DelTable(t)
		}
		if err := c.Flush(); err != nil {
			errs = append(errs, fmt.Errorf("delete nftables tables %q: %w", n.cfg.Table, err))
		}
	}
	taps, err := bangerTaps()
	if err != nil {
		errs = append(errs, err)
	}
	for _, tap := range taps {
		if err := netlink.LinkDel(tap); err != nil {
			errs = append(errs, fmt.Errorf("delete tap %q: %w", tap.Attrs().Name, err))
		}
	}
	br, err := n.bridgeLink()
	switch {
	case errors.Is(err, ErrNoBridge):
	case err != nil:
		errs = append(errs, err)
	default:
		if err := netlink.LinkDel(br); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge %q: %w", n.cfg.Bridge, err))
		}
	}
	switch prior, err := n.fwd.load(); {
	case err != nil:
		errs = append(errs, err)
	case prior != "":
		if err := os.WriteFile(ipForwardPath, []byte(prior+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore ip forwarding to %s: %w", prior, err))
		} else if err := n.fwd.clear(); err != nil {
			errs = append(errs, err)
		} else {
			n.log.InfoContext(ctx, "restored ip forwarding", "value", prior)
		}
	}
	return errors.Join(errs...)
}
