package hostnat

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/bangerdev/banger/internal/testutil"
)

// TestGuestTraffic sends real packets. Everything lives inside the test's own
// network namespace and child namespaces it creates (no names in /run/netns):
//
//	guest1 ns ─veth─┐
//	                ├─ banger0 (10.213.77.1) ── test ns ── up0 198.51.100.2 ─veth─ "outside" ns
//	guest2 ns ─veth─┘                                                      198.51.100.1, 169.254.169.254
//
// The outside namespace has no route back to the guest subnet, so a guest
// reaching it proves the masquerade; its view of the peer address shows it.
func TestGuestTraffic(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	ctx := context.Background()
	n := mustNew(t, Config{})
	if err := n.Up(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Teardown(context.Background()) })
	gw := n.Plan().Gateway

	g1 := newNS(t)
	g2 := newNS(t)
	outside := newNS(t)
	guestLink(t, g1, "gv1", netip.MustParsePrefix("10.213.77.11/24"), gw)
	guestLink(t, g2, "gv2", netip.MustParsePrefix("10.213.77.12/24"), gw)

	// The uplink: host side 198.51.100.2, outside 198.51.100.1 plus the
	// metadata address, with the host routing 169.254.169.254 to it.
	up := vethInto(t, "up0", outside, "eth0")
	mustAddr(t, netlink.AddrAdd(up, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("198.51.100.2/24"))}))
	mustAddr(t, netlink.LinkSetUp(up))
	oh := handleAt(t, outside)
	oeth, err := oh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	mustAddr(t, oh.AddrAdd(oeth, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("198.51.100.1/24"))}))
	mustAddr(t, oh.AddrAdd(oeth, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("169.254.169.254/32"))}))
	mustAddr(t, oh.LinkSetUp(oeth))
	mustAddr(t, netlink.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index,
		Dst: ipNet(netip.MustParsePrefix("169.254.169.254/32")), Gw: net.ParseIP("198.51.100.1")}))

	gwLn := listenIn(t, netns.None(), net.JoinHostPort(gw.String(), "0"))
	g2Ln := listenIn(t, g2, "10.213.77.12:0")
	outLn := listenIn(t, outside, "0.0.0.0:0")
	port := func(ln net.Listener) string { return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) }

	// Guest to gateway, and guest to guest across the bridge.
	if peer := dialFrom(t, g1, gw.String()+":"+port(gwLn), gwLn); peer != "10.213.77.11" {
		t.Errorf("gateway saw guest1 as %s", peer)
	}
	if peer := dialFrom(t, g1, "10.213.77.12:"+port(g2Ln), g2Ln); peer != "10.213.77.11" {
		t.Errorf("guest2 saw guest1 as %s", peer)
	}
	// Guest to the outside: masqueraded behind the uplink address.
	if peer := dialFrom(t, g2, "198.51.100.1:"+port(outLn), outLn); peer != "198.51.100.2" {
		t.Errorf("outside saw guest2 as %s, want the masqueraded 198.51.100.2", peer)
	}
	// The metadata address answers the host itself but not a guest.
	if peer := dialFrom(t, netns.None(), "169.254.169.254:"+port(outLn), outLn); peer != "198.51.100.2" {
		t.Errorf("outside saw the host as %s", peer)
	}
	if err := tryDial(g1, "169.254.169.254:"+port(outLn)); err == nil {
		t.Error("a guest reached 169.254.169.254")
	}
	// The outside cannot route into the guest subnet through the host.
	mustAddr(t, oh.RouteAdd(&netlink.Route{LinkIndex: oeth.Attrs().Index,
		Dst: ipNet(n.Plan().Subnet), Gw: net.ParseIP("198.51.100.2")}))
	if err := tryDial(outside, "10.213.77.12:"+port(g2Ln)); err == nil {
		t.Error("the outside reached a guest through the host")
	}
}

func mustAddr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// newNS creates an anonymous network namespace (kept alive by its handle)
// without moving the test's threads into it.
func newNS(t *testing.T) netns.NsHandle {
	t.Helper()
	var ns netns.NsHandle
	err := onThreadIn(netns.None(), func() error {
		var err error
		ns, err = netns.New() // moves only this locked thread
		return err
	})
	if err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// onThreadIn runs fn on a locked OS thread inside ns (netns.None(): stay),
// restoring the thread's namespace afterwards. If the restore fails the
// thread stays locked, so Go discards it instead of reusing it.
func onThreadIn(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if ns != netns.None() {
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			return err
		}
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		panic("cannot restore the thread's network namespace: " + err.Error())
	}
	runtime.UnlockOSThread()
	return fnErr
}

func handleAt(t *testing.T, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// vethInto creates a veth whose peer moves into ns under peerName; it
// returns the host end.
func vethInto(t *testing.T, host string, ns netns.NsHandle, peerName string) netlink.Link {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = host
	tmpPeer := "p" + host
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: tmpPeer}); err != nil {
		t.Fatalf("add veth %s: %v", host, err)
	}
	peer, err := netlink.LinkByName(tmpPeer)
	if err != nil {
		t.Fatal(err)
	}
	mustAddr(t, netlink.LinkSetNsFd(peer, int(ns)))
	h := handleAt(t, ns)
	p, err := h.LinkByName(tmpPeer)
	if err != nil {
		t.Fatal(err)
	}
	mustAddr(t, h.LinkSetName(p, peerName))
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	mustAddr(t, h.LinkSetUp(lo))
	l, err := netlink.LinkByName(host)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// guestLink plugs a "guest" namespace into the bridge with a static address
// and a default route via the gateway, as a VM's config would.
func guestLink(t *testing.T, ns netns.NsHandle, host string, addr netip.Prefix, gw netip.Addr) {
	t.Helper()
	l := vethInto(t, host, ns, "eth0")
	br, err := netlink.LinkByName(DefaultBridge)
	if err != nil {
		t.Fatal(err)
	}
	mustAddr(t, netlink.LinkSetMaster(l, br))
	mustAddr(t, netlink.LinkSetUp(l))
	h := handleAt(t, ns)
	eth, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	mustAddr(t, h.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(addr)}))
	mustAddr(t, h.LinkSetUp(eth))
	mustAddr(t, h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw.AsSlice()}))
}

// listenIn opens a TCP listener whose socket belongs to ns.
func listenIn(t *testing.T, ns netns.NsHandle, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := onThreadIn(ns, func() error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// tryDial connects from a socket created in ns, with a short bound.
func tryDial(ns netns.NsHandle, addr string) error {
	return onThreadIn(ns, func() error {
		c, err := net.DialTimeout("tcp4", addr, 1500*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// dialFrom connects from ns to addr and returns the peer address ln saw.
func dialFrom(t *testing.T, ns netns.NsHandle, addr string, ln net.Listener) string {
	t.Helper()
	if err := tryDial(ns, addr); err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	type result struct {
		peer string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		got <- result{peer: c.RemoteAddr().(*net.TCPAddr).IP.String()}
	}()
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("accept on %s: %v", ln.Addr(), r.err)
		}
		return r.peer
	case <-time.After(5 * time.Second):
		ln.Close() // unblocks the Accept goroutine
		t.Fatalf("no connection arrived at %s", ln.Addr())
		return ""
	}
}
