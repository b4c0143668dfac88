package hostnat

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/bangerdev/banger/internal/testutil"
)

// tapSourceRules is the tap's rule count in the taps chain.
func tapSourceRules(t *testing.T, n *Network, tap string) int {
	t.Helper()
	st, err := n.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, ts := range st.Taps {
		if ts.Name == tap {
			return ts.SourceRules
		}
	}
	t.Fatalf("tap %s not in state", tap)
	return 0
}

// TestRebindHeldTap: the rules of a tap handed away are re-applied only
// for that very device, held by that uid and gid, and its owner stays the
// holder's; a missing tap, another device, owner or group is refused with
// the tap left as it was.
func TestRebindHeldTap(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	ctx := context.Background()
	n := mustNew(t, Config{})
	if err := n.EnsureBridge(ctx); err != nil {
		t.Fatal(err)
	}
	const tap = "bt-held"
	g := testGuest(tap)
	if err := n.CreateTap(ctx, tap, 4242, 4242, g); err != nil {
		t.Fatal(err)
	}
	want := tapSourceRules(t, n, tap)
	holder := TapOwner{UID: 7777, GID: 7778}
	idx, _, err := n.HandTap(ctx, tap, 4242, 0, holder)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.unguardTap(tap); err != nil {
		t.Fatal(err)
	}
	if got := tapSourceRules(t, n, tap); got != 0 {
		t.Fatalf("rules after unguard = %d", got)
	}
	for _, bad := range []struct {
		what string
		name string
		held HeldTap
		want error
	}{
		{"another device", tap, HeldTap{Index: idx + 1000, Holder: holder}, ErrNotOurs},
		{"another holder", tap, HeldTap{Index: idx, Holder: TapOwner{UID: 4242, GID: 7778}}, ErrNotOurs},
		{"another group", tap, HeldTap{Index: idx, Holder: TapOwner{UID: 7777, GID: 4242}}, ErrNotOurs},
		{"missing tap", "bt-gone", HeldTap{Index: idx, Holder: holder}, ErrNoTap},
	} {
		if err := n.RebindHeldTap(ctx, bad.name, bad.held, g); !errors.Is(err, bad.want) {
			t.Errorf("%s: %v, want %v", bad.what, err, bad.want)
		}
		if got := tapSourceRules(t, n, tap); got != 0 {
			t.Errorf("%s: refused rebind wrote %d rules", bad.what, got)
		}
	}
	if err := n.RebindHeldTap(ctx, tap, HeldTap{Index: idx, Holder: holder}, g); err != nil {
		t.Fatalf("rebind of the held tap: %v", err)
	}
	if got := tapSourceRules(t, n, tap); got != want {
		t.Errorf("rules after rebind = %d, want %d", got, want)
	}
	l, err := netlink.LinkByName(tap)
	if err != nil {
		t.Fatal(err)
	}
	if tt := l.(*netlink.Tuntap); tt.Owner != 7777 || tt.Group != 7778 || l.Attrs().Index != idx || l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("tap after rebind: owner %d group %d index %d flags %v, want 7777:7778 device %d up", tt.Owner, tt.Group, l.Attrs().Index, l.Attrs().Flags, idx)
	}
	if err := n.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
}
