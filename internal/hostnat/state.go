package hostnat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
)

// State is what exists of banger's host network, for doctor and tests.
type State struct {
	Bridge     *BridgeState
	Taps       []TapState
	Forwarding bool
	// ForwardingWas is the ip_forward value banger found before it turned
	// forwarding on ("" when banger did not change it); `network down`
	// restores it.
	ForwardingWas string
	// Chains maps each chain of banger's inet table to its rule count; nil
	// when the table does not exist.
	Chains map[string]int
	// BridgeChains is the same for the bridge-family (anti-spoofing) table.
	BridgeChains map[string]int
	// LegacyTable: an ip-family table of an older banger is still there.
	LegacyTable bool
}

// BridgeState describes the bridge.
type BridgeState struct {
	Name         string
	Up           bool
	Addrs        []string // CIDR form
	IPv6Disabled bool
}

// TapState describes one banger tap.
type TapState struct {
	Name     string
	OwnerUID uint32
	Up       bool
	Master   string // bridge it is attached to, "" if none
	// SourceRules counts the tap's rules in the taps chain: anti-spoofing
	// and its egress policy (0: it sends nothing).
	SourceRules int
	// Isolated: the tap may not exchange frames with other taps.
	Isolated     bool
	IPv6Disabled bool
}

// Changes lists, in words, what banger changed on this host's network: for
// `system network status` and doctor.
func (st State) Changes() []string {
	var out []string
	if b := st.Bridge; b != nil {
		out = append(out, fmt.Sprintf("bridge %s created (%s, ipv6 disabled: %v)", b.Name, strings.Join(b.Addrs, " "), b.IPv6Disabled))
	}
	if len(st.Taps) > 0 {
		out = append(out, fmt.Sprintf("%d tap(s) created", len(st.Taps)))
	}
	if st.Chains != nil {
		out = append(out, "nftables table inet banger (NAT, forwarding filter)")
	}
	if st.BridgeChains != nil {
		out = append(out, "nftables table bridge banger (per-VM source MAC/IP filter, VM isolation)")
	}
	if st.LegacyTable {
		out = append(out, "nftables table ip banger (left by an older banger; removed by the next network up or down)")
	}
	if st.ForwardingWas != "" {
		out = append(out, fmt.Sprintf("net.ipv4.ip_forward set to 1 (was %s; `banger system network down` restores it)", st.ForwardingWas))
	}
	return out
}

// State reports the bridge, banger taps, forwarding and the nftables tables.
func (n *Network) State(ctx context.Context) (State, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return State{}, err
	}
	var st State
	br, err := n.bridgeLink()
	switch {
	case errors.Is(err, ErrNoBridge):
	case err != nil:
		return st, err
	default:
		bs := &BridgeState{Name: br.Attrs().Name, Up: br.Attrs().Flags&net.FlagUp != 0, IPv6Disabled: ipv6Disabled(br.Attrs().Name)}
		addrs, err := netlink.AddrList(br, netlink.FAMILY_V4)
		if err != nil {
			return st, fmt.Errorf("list addresses of bridge %q: %w", n.cfg.Bridge, err)
		}
		for _, a := range addrs {
			bs.Addrs = append(bs.Addrs, a.IPNet.String())
		}
		st.Bridge = bs
	}
	if b, err := os.ReadFile(ipForwardPath); err == nil {
		st.Forwarding = strings.TrimSpace(string(b)) == "1"
	}
	if st.ForwardingWas, err = n.fwd.load(); err != nil {
		return st, err
	}

	c, err := nftables.New()
	if err != nil {
		return st, fmt.Errorf("open nftables: %w", err)
	}
	if st.Chains, _, err = n.chainRules(c, n.table()); err != nil {
		return st, err
	}
	legacy, _, err := n.chainRules(c, n.legacyTable())
	if err != nil {
		return st, err
	}
	st.LegacyTable = legacy != nil
	bridgeChains, perTap, err := n.chainRules(c, n.bridgeTable())
	if err != nil {
		return st, err
	}
	st.BridgeChains = bridgeChains

	taps, err := bangerTaps()
	if err != nil {
		return st, err
	}
	for _, tap := range taps {
		name := tap.Attrs().Name
		ts := TapState{Name: name, OwnerUID: tap.Owner, Up: tap.Attrs().Flags&net.FlagUp != 0,
			SourceRules: perTap[ChainTaps][name], Isolated: perTap[ChainIsolation][name] > 0, IPv6Disabled: ipv6Disabled(name)}
		if m := tap.Attrs().MasterIndex; m != 0 {
			if ml, err := netlink.LinkByIndex(m); err == nil {
				ts.Master = ml.Attrs().Name
			}
		}
		st.Taps = append(st.Taps, ts)
	}
	return st, nil
}

// chainRules counts the rules of each chain of t (nil: no such table) and,
// per chain, the rules commented for each tap.
func (n *Network) chainRules(c *nftables.Conn, t *nftables.Table) (map[string]int, map[string]map[string]int, error) {
	chains, err := c.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return nil, nil, fmt.Errorf("list nftables chains: %w", err)
	}
	var counts map[string]int
	perTap := map[string]map[string]int{}
	for _, ch := range chains {
		if ch.Table.Name != t.Name {
			continue
		}
		if counts == nil {
			counts = map[string]int{}
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return nil, nil, fmt.Errorf("list rules of chain %q: %w", ch.Name, err)
		}
		counts[ch.Name] = len(rules)
		for _, r := range rules {
			if s, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok && strings.HasPrefix(s, "banger tap ") {
				if perTap[ch.Name] == nil {
					perTap[ch.Name] = map[string]int{}
				}
				perTap[ch.Name][strings.TrimPrefix(s, "banger tap ")]++
			}
		}
	}
	if counts == nil {
		// A table with no chains still exists: tell it from a missing one.
		tables, err := c.ListTablesOfFamily(t.Family)
		if err != nil {
			return nil, nil, fmt.Errorf("list nftables tables: %w", err)
		}
		for _, tb := range tables {
			if tb.Name == t.Name {
				counts = map[string]int{}
			}
		}
	}
	return counts, perTap, nil
}
