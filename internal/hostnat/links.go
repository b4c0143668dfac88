package hostnat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EnsureBridge creates the bridge if missing, gives it exactly the gateway
// address and brings it up. It first refuses a subnet that overlaps a route
// or address banger does not own. Idempotent.
func (n *Network) EnsureBridge(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	return n.ensureBridge(ctx)
}

func (n *Network) ensureBridge(ctx context.Context) error {
	name := n.cfg.Bridge
	br, err := n.bridgeLink()
	if err != nil && !errors.Is(err, ErrNoBridge) {
		return err
	}
	brIndex := 0
	if br != nil {
		brIndex = br.Attrs().Index
	}
	if err := n.checkOverlap(brIndex); err != nil {
		return err
	}
	if br == nil {
		la := netlink.NewLinkAttrs()
		la.Name = name
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
			return fmt.Errorf("create bridge %q: %w", name, err)
		}
		n.log.InfoContext(ctx, "created bridge", "bridge", name)
		if br, err = n.bridgeLink(); err != nil {
			return err
		}
	}

	want := netip.PrefixFrom(n.plan.Gateway, n.plan.Subnet.Bits())
	addrs, err := netlink.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of bridge %q: %w", name, err)
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && p == want {
			continue
		}
		// A stale address (an earlier subnet) would keep routing the old pool here.
		if err := netlink.AddrDel(br, &a); err != nil {
			return fmt.Errorf("remove stale address %s from bridge %q: %w", a.IPNet, name, err)
		}
		n.log.InfoContext(ctx, "removed stale bridge address", "bridge", name, "addr", a.IPNet.String())
	}
	// Before it is up: a guest's router advertisement must never configure
	// the host (IPv6 defaults would accept one).
	if err := disableIPv6(name); err != nil {
		return fmt.Errorf("bridge %q: %w", name, err)
	}
	if err := netlink.AddrReplace(br, &netlink.Addr{IPNet: ipNet(want)}); err != nil {
		return fmt.Errorf("assign %s to bridge %q: %w", want, name, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return fmt.Errorf("bring up bridge %q: %w", name, err)
	}
	return nil
}

// bridgeLink returns the bridge, ErrNoBridge when absent, or ErrNotOurs when
// the name is taken by another kind of device.
func (n *Network) bridgeLink() (netlink.Link, error) {
	l, err := netlink.LinkByName(n.cfg.Bridge)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("%w: %q", ErrNoBridge, n.cfg.Bridge)
		}
		return nil, fmt.Errorf("look up bridge %q: %w", n.cfg.Bridge, err)
	}
	if l.Type() != "bridge" {
		return nil, fmt.Errorf("%w: %q is a %s, not a bridge", ErrNotOurs, n.cfg.Bridge, l.Type())
	}
	return l, nil
}

// occupied is a host network that a guest subnet must not overlap.
type occupied struct {
	Prefix netip.Prefix
	What   string // "route 10.0.0.0/16 dev eth0 table main"
}

// occupiedNetworks lists the host's IPv4 routes (every table but local) and
// interface address networks, except the default routes and anything on the
// banger bridge (index brIndex, 0 if none).
func occupiedNetworks(brIndex int) ([]occupied, error) {
	linkName := func(idx int) string {
		if l, err := netlink.LinkByIndex(idx); err == nil {
			return l.Attrs().Name
		}
		return fmt.Sprintf("if%d", idx)
	}
	var out []occupied
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list host routes: %w", err)
	}
	for _, r := range routes {
		if r.Table == unix.RT_TABLE_LOCAL || r.Dst == nil {
			continue
		}
		p, ok := prefixOf(r.Dst)
		if !ok || p.Bits() == 0 || (brIndex != 0 && r.LinkIndex == brIndex) {
			continue
		}
		what := "route " + p.String()
		if r.LinkIndex != 0 {
			what += " dev " + linkName(r.LinkIndex)
		}
		if r.Table != unix.RT_TABLE_MAIN {
			what += fmt.Sprintf(" table %d", r.Table)
		}
		out = append(out, occupied{p, what})
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	for _, a := range addrs {
		if brIndex != 0 && a.LinkIndex == brIndex {
			continue
		}
		p, ok := prefixOf(a.IPNet)
		if !ok {
			continue
		}
		out = append(out, occupied{p.Masked(), fmt.Sprintf("address %s dev %s", p, linkName(a.LinkIndex))})
	}
	return out, nil
}

func (n *Network) checkOverlap(brIndex int) error {
	occ, err := occupiedNetworks(brIndex)
	if err != nil {
		return err
	}
	subnet := n.plan.Subnet
	for _, o := range occ {
		if !o.Prefix.Overlaps(subnet) {
			continue
		}
		hint := "pick another private subnet with `banger config set network.subnet CIDR`"
		if free, ok := suggestSubnet(subnet.Bits(), occ); ok {
			hint = fmt.Sprintf("pick another subnet, e.g. `banger config set network.subnet %s`", free)
		}
		return fmt.Errorf("%w: %s clashes with %s (not banger's); %s", ErrSubnetOverlap, subnet, o.What, hint)
	}
	return nil
}

// suggestSubnet finds a free 10.x.y.0/bits candidate, checking a bounded,
// deterministic list (10.200–10.254 second octet).
func suggestSubnet(bits int, occ []occupied) (netip.Prefix, bool) {
	for second := 200; second < 255; second++ {
		third := byte(77)
		if bits < 24 {
			third = 0
		}
		cand := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(second), third, 0}), bits).Masked()
		free := true
		for _, o := range occ {
			if o.Prefix.Overlaps(cand) {
				free = false
				break
			}
		}
		if free {
			return cand, true
		}
	}
	return netip.Prefix{}, false
}

// CreateTap creates a persistent tap owned by ownerUID and ownerGID so the
// VMM can open it without privileges (the kernel then requires both: a
// process must have that euid and be in that group), attaches it to
// the bridge and brings it up. The tap is single-queue without packet info,
// with vnet headers: what QEMU's `-netdev tap,ifname=` and Firecracker open.
// Before the tap is up, its IPv6 is disabled and its frames are bound to
// guest's MAC and address (see guardTap); an existing tap gets g's rules.
// Idempotent for a tap with the same owner.
func (n *Network) CreateTap(ctx context.Context, name string, ownerUID, ownerGID int, g TapGuest) error {
	if err := ValidateTapName(name); err != nil {
		return err
	}
	if err := validateOwner(ownerUID, ownerGID); err != nil {
		return fmt.Errorf("create tap %q: %w", name, err)
	}
	if err := n.checkGuest(g); err != nil {
		return fmt.Errorf("create tap %q: %w", name, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	br, err := n.bridgeLink()
	if err != nil {
		return fmt.Errorf("create tap %q: %w", name, err)
	}

	link, err := netlink.LinkByName(name)
	var nf netlink.LinkNotFoundError
	switch {
	case errors.As(err, &nf):
		la := netlink.NewLinkAttrs()
		la.Name = name
		tap := &netlink.Tuntap{
			LinkAttrs: la,
			Mode:      netlink.TUNTAP_MODE_TAP,
			// TUN_EXCL: fail rather than attach if the name appeared meanwhile.
			Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TuntapFlag(unix.IFF_TUN_EXCL),
			Owner: uint32(ownerUID),
			Group: uint32(ownerGID),
		}
		if err := netlink.LinkAdd(tap); err != nil {
			return fmt.Errorf("create tap %q: %w", name, err)
		}
		n.log.InfoContext(ctx, "created tap", "tap", name, "owner_uid", ownerUID)
		if link, err = netlink.LinkByName(name); err != nil {
			return fmt.Errorf("look up new tap %q: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("look up tap %q: %w", name, err)
	default:
		tt, ok := link.(*netlink.Tuntap)
		if !ok || tt.Mode != netlink.TUNTAP_MODE_TAP {
			return fmt.Errorf("create tap %q: %w: it is a %s", name, ErrNotOurs, link.Type())
		}
		if int64(tt.Owner) != int64(ownerUID) {
			return fmt.Errorf("create tap %q: %w: owned by uid %d, not %d", name, ErrNotOurs, tt.Owner, ownerUID)
		}
	}
	return n.bindTap(ctx, link, br, name, g)
}

// bindTap disables the tap's IPv6, writes its rules for g, attaches it to
// the bridge and brings it up.
func (n *Network) bindTap(ctx context.Context, link, br netlink.Link, name string, g TapGuest) error {
	if err := disableIPv6(name); err != nil {
		return fmt.Errorf("create tap %q: %w", name, err)
	}
	if err := n.guardTap(ctx, name, g); err != nil {
		return fmt.Errorf("create tap %q: %w", name, err)
	}
	if err := netlink.LinkSetMaster(link, br); err != nil {
		return fmt.Errorf("attach tap %q to bridge %q: %w", name, n.cfg.Bridge, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up tap %q: %w", name, err)
	}
	return nil
}

// HeldTap is a tap handed to another uid (a jail's) while its VM runs:
// which device it is and who holds it.
type HeldTap struct {
	Index  int
	Holder TapOwner
}

// RebindHeldTap is CreateTap for a tap handed away with HandTap: it
// re-applies the rules for g (and bridge, IPv6, up) to that very device,
// which must still be the persistent tap held by held.Holder, and leaves
// its owner as it is. It never creates a tap: a missing one is ErrNoTap,
// another device or owner ErrNotOurs.
func (n *Network) RebindHeldTap(ctx context.Context, name string, held HeldTap, g TapGuest) error {
	if err := ValidateTapName(name); err != nil {
		return err
	}
	if err := validateOwner(held.Holder.UID, held.Holder.GID); err != nil {
		return fmt.Errorf("re-apply rules of tap %q: %w", name, err)
	}
	if err := n.checkGuest(g); err != nil {
		return fmt.Errorf("re-apply rules of tap %q: %w", name, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	br, err := n.bridgeLink()
	if err != nil {
		return fmt.Errorf("re-apply rules of tap %q: %w", name, err)
	}
	tt, err := persistentTap(name, held.Holder.UID)
	if err != nil {
		return fmt.Errorf("re-apply rules of tap %q held by uid %d: %w", name, held.Holder.UID, err)
	}
	if tt.Attrs().Index != held.Index || int64(tt.Group) != int64(held.Holder.GID) {
		return fmt.Errorf("re-apply rules of tap %q: %w: it is device %d of group %d, not device %d of group %d", name, ErrNotOurs, tt.Attrs().Index, tt.Group, held.Index, held.Holder.GID)
	}
	return n.bindTap(ctx, tt, br, name, g)
}

// DeleteTap removes a banger tap; a missing tap is not an error.
func (n *Network) DeleteTap(ctx context.Context, name string) error {
	if err := ValidateTapName(name); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := deleteTap(name); err != nil {
		return err
	}
	return n.unguardTap(name)
}

func deleteTap(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("look up tap %q: %w", name, err)
	}
	if _, ok := link.(*netlink.Tuntap); !ok {
		return fmt.Errorf("delete tap %q: %w: it is a %s", name, ErrNotOurs, link.Type())
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("delete tap %q: %w", name, err)
	}
	return nil
}

// bangerTaps lists the tap devices with banger's tap prefix.
func bangerTaps() ([]*netlink.Tuntap, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var taps []*netlink.Tuntap
	for _, l := range links {
		tt, ok := l.(*netlink.Tuntap)
		if ok && strings.HasPrefix(l.Attrs().Name, "bt-") && ValidateTapName(l.Attrs().Name) == nil {
			taps = append(taps, tt)
		}
	}
	return taps, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	a = a.Unmap()
	if !a.Is4() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
