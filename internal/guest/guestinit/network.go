package guestinit

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/bangerdev/banger/internal/guest/guestconfig"
)

// configureNetwork brings lo up and, when the config has a network, gives
// the interface with the configured MAC its address and default route.
func configureNetwork(log *slog.Logger, n *guestconfig.Network) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	if n == nil {
		log.Info("no network configured")
		return nil
	}
	mac, err := net.ParseMAC(n.MAC)
	if err != nil {
		return fmt.Errorf("parse mac: %w", err)
	}
	link, err := poll(10*time.Second, 20*time.Millisecond, func() (netlink.Link, error) { return linkByMAC(mac) })
	if err != nil {
		return err
	}
	name := link.Attrs().Name
	addr := &netlink.Addr{IPNet: &net.IPNet{
		IP:   n.Address.Addr().AsSlice(),
		Mask: net.CIDRMask(n.Address.Bits(), n.Address.Addr().BitLen()),
	}}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("add %s to %s: %w", n.Address, name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	if n.Gateway.IsValid() {
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: n.Gateway.AsSlice()}
		if err := netlink.RouteReplace(route); err != nil {
			return fmt.Errorf("add default route via %s on %s: %w", n.Gateway, name, err)
		}
	}
	log.Info("network configured", "link", name, "address", n.Address, "gateway", n.Gateway)
	return nil
}

var errNoLink = errors.New("no interface has the configured mac")

func linkByMAC(mac net.HardwareAddr) (netlink.Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var seen []string
	for _, l := range links {
		if strings.EqualFold(l.Attrs().HardwareAddr.String(), mac.String()) {
			return l, nil
		}
		seen = append(seen, l.Attrs().Name+"="+l.Attrs().HardwareAddr.String())
	}
	return nil, fmt.Errorf("%w %s (have %s)", errNoLink, mac, strings.Join(seen, ", "))
}
