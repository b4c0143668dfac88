package roothelper

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/hostnat"
	"github.com/bangerdev/banger/internal/policy"
	"github.com/bangerdev/banger/internal/rpc"
)

// netService serves the host network methods with the one hostnat.Network
// of this helper process. The bridge, subnet and table come from the
// helper's start-up config, never from a request.
type netService struct {
	net      *hostnat.Network
	cfgErr   error // an invalid NetworkConfig: every network method fails with it
	ownerUID int
	dns      *dnsService // follows the bridge: started after up, stopped before down
	// jails holds the taps handed to running jails (nil: none).
	jails *jailerService
}

// networkMethods adds the network methods to the helper's method table.
func (h *Helper) networkMethods(m *rpc.Methods, dns *dnsService) {
	cfg := h.opts.NetworkConfig
	if cfg.Logger == nil {
		cfg.Logger = h.log.With("component", "hostnat")
	}
	n, err := hostnat.New(cfg)
	if err != nil {
		h.log.Error("host network config is invalid: network methods will fail", "err", err)
	}
	s := &netService{net: n, cfgErr: err, ownerUID: h.opts.OwnerUID, dns: dns}
	h.netsvc = s
	if err == nil {
		h.hostnet = n
	}
	rpc.Register(m, api.MethodHelperNetworkUp, s.up)
	rpc.Register(m, api.MethodHelperNetworkDown, s.down)
	rpc.Register(m, api.MethodHelperNetworkState, s.state)
	rpc.Register(m, api.MethodHelperTapCreate, s.createTap)
	rpc.Register(m, api.MethodHelperTapDelete, s.deleteTap)
	rpc.Register(m, api.MethodHelperTapOpen, s.openTap)
}

func (s *netService) ready() error {
	if s.cfgErr != nil {
		return api.Errorf(api.CodeFailedPrecondition, "root helper host network config: %v", s.cfgErr)
	}
	return nil
}

func (s *netService) info() api.NetworkInfo {
	cfg, plan := s.net.Config(), s.net.Plan()
	return api.NetworkInfo{Bridge: cfg.Bridge, Subnet: plan.Subnet.String(), Gateway: plan.Gateway.String(), Table: cfg.Table}
}

func (s *netService) up(ctx context.Context, c *rpc.Call, _ api.Empty) (api.NetworkInfo, error) {
	if err := s.ready(); err != nil {
		return api.NetworkInfo{}, err
	}
	info := s.info()
	if err := s.net.Up(ctx); err != nil {
		return api.NetworkInfo{}, netError(fmt.Sprintf("bring up host network (bridge %s, subnet %s)", info.Bridge, info.Subnet), err)
	}
	c.Log.Info("host network up", "bridge", info.Bridge, "subnet", info.Subnet, "table", info.Table, "peer_uid", c.Peer.UID)
	s.dns.ensure(ctx)
	return info, nil
}

func (s *netService) down(ctx context.Context, c *rpc.Call, _ api.Empty) (api.Empty, error) {
	if err := s.ready(); err != nil {
		return api.Empty{}, err
	}
	s.dns.stopServing(ctx)
	if err := s.net.Teardown(ctx); err != nil {
		return api.Empty{}, netError("tear down host network", err)
	}
	c.Log.Info("host network down", "bridge", s.net.Config().Bridge, "peer_uid", c.Peer.UID)
	return api.Empty{}, nil
}

func (s *netService) state(ctx context.Context, c *rpc.Call, _ api.Empty) (api.NetworkState, error) {
	if err := s.ready(); err != nil {
		return api.NetworkState{}, err
	}
	st, err := s.net.State(ctx)
	if err != nil {
		return api.NetworkState{}, netError("read host network state", err)
	}
	out := api.NetworkState{Config: s.info(), Forwarding: st.Forwarding, ForwardingWas: st.ForwardingWas,
		Chains: st.Chains, BridgeChains: st.BridgeChains, Changes: st.Changes()}
	if b := st.Bridge; b != nil {
		out.Bridge = &api.NetworkBridgeState{Name: b.Name, Up: b.Up, Addrs: b.Addrs, IPv6Disabled: b.IPv6Disabled}
	}
	for _, t := range st.Taps {
		out.Taps = append(out.Taps, api.NetworkTapState{Name: t.Name, OwnerUID: t.OwnerUID, Up: t.Up, Master: t.Master,
			SourceRules: t.SourceRules, Isolated: t.Isolated, IPv6Disabled: t.IPv6Disabled})
	}
	return out, nil
}

func (s *netService) createTap(ctx context.Context, c *rpc.Call, p api.TapCreate) (api.Empty, error) {
	if err := s.ready(); err != nil {
		return api.Empty{}, err
	}
	if err := hostnat.ValidateTapName(p.Name); err != nil {
		return api.Empty{}, netError("create tap", err)
	}
	// The owner may only make taps it can open itself: for its own uid and
	// its own (kernel-reported) gid. Root may hand a tap to anyone.
	if c.Peer.UID != 0 {
		if p.OwnerUID != s.ownerUID {
			return api.Empty{}, api.Errorf(api.CodePermissionDenied, "create tap %q: owner uid %d is not this helper's owner uid %d (only root may choose another)", p.Name, p.OwnerUID, s.ownerUID)
		}
		if int64(p.OwnerGID) != int64(c.Peer.GID) {
			return api.Empty{}, api.Errorf(api.CodePermissionDenied, "create tap %q: owner gid %d is not the caller's gid %d (only root may choose another)", p.Name, p.OwnerGID, c.Peer.GID)
		}
	}
	g, err := tapGuest(p)
	if err != nil {
		return api.Empty{}, err
	}
	// A tap a running jail holds (its owner is the jail's uid) gets its
	// rules again, its owner unchanged: a restarted daemon re-applies a
	// jailed VM's filter. Only the helper's own record of that VM's jail
	// says so; the request cannot.
	held, err := s.jails.withHeldTap(p.Name, func(rec jailRec) error {
		if p.OwnerUID != rec.TapUID {
			return fmt.Errorf("%w: tap %q is held by the jail of vm %s for uid %d, not uid %d", hostnat.ErrNotOurs, p.Name, rec.VMID, rec.TapUID, p.OwnerUID)
		}
		if err := s.net.RebindHeldTap(ctx, p.Name, hostnat.HeldTap{Index: rec.TapIndex, Holder: hostnat.TapOwner{UID: rec.UID, GID: rec.GID}}, g); err != nil {
			return err
		}
		c.Log.Info("rules of a jail's tap re-applied", "tap", p.Name, "vm", rec.VMID, "jail_uid", rec.UID, "pid", rec.PID)
		return nil
	})
	if errors.Is(err, errJailNotRunning) {
		err = fmt.Errorf("%w: %w", hostnat.ErrNotOurs, err)
	}
	if err == nil && !held {
		err = s.net.CreateTap(ctx, p.Name, p.OwnerUID, p.OwnerGID, g)
	}
	if err != nil {
		return api.Empty{}, netError(fmt.Sprintf("create tap %q", p.Name), err)
	}
	c.Log.Info("tap ready", "tap", p.Name, "owner_uid", p.OwnerUID, "owner_gid", p.OwnerGID, "mac", g.MAC.String(), "ip", g.IP.String(), "shared", g.Shared, "deny_egress", len(g.DenyEgress), "peer_uid", c.Peer.UID)
	return api.Empty{}, nil
}

// tapGuest parses the guest identity a tap is bound to.
func tapGuest(p api.TapCreate) (hostnat.TapGuest, error) {
	var g hostnat.TapGuest
	mac, err := net.ParseMAC(p.MAC)
	if err != nil || len(mac) != 6 {
		return g, api.Errorf(api.CodeInvalidArgument, "create tap %q: guest mac %q is not an ethernet address (want e.g. 02:ba:00:00:00:01)", p.Name, printable(p.MAC))
	}
	ip, err := netip.ParseAddr(p.IP)
	if err != nil || !ip.Is4() {
		return g, api.Errorf(api.CodeInvalidArgument, "create tap %q: guest address %q is not an IPv4 address", p.Name, printable(p.IP))
	}
	switch p.Network {
	case "", api.NetworkIsolated:
	case api.NetworkShared:
		g.Shared = true
	default:
		return g, api.Errorf(api.CodeInvalidArgument, "create tap %q: network %q is not %q or %q", p.Name, printable(p.Network), api.NetworkIsolated, api.NetworkShared)
	}
	// The egress list is the owner daemon's (only as trusted as the owner
	// uid): parsed strictly and checked by policy, which refuses a list
	// that would lift the metadata drop. hostnat checks it again.
	if len(p.DenyEgress) > 0 {
		deny, err := policy.ParsePrefixes(p.DenyEgress)
		if err != nil {
			return g, api.Errorf(api.CodeInvalidArgument, "create tap %q: %v", p.Name, err)
		}
		if err := policy.CheckEgress(deny); err != nil {
			return g, api.Errorf(api.CodeInvalidArgument, "create tap %q: %v", p.Name, err)
		}
		g.DenyEgress = deny
	}
	g.MAC, g.IP = mac, ip
	return g, nil
}

// printable bounds and sanitises a caller's string for an error message.
func printable(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// openTap opens an existing banger tap and passes its descriptor to the
// caller, whose VMM then needs no access to /dev/net/tun. Authorised like
// tap.create: the owner only opens taps owned by its own uid; root any.
func (s *netService) openTap(ctx context.Context, c *rpc.Call, p api.TapRef) (api.Empty, error) {
	if err := s.ready(); err != nil {
		return api.Empty{}, err
	}
	if err := hostnat.ValidateTapName(p.Name); err != nil {
		return api.Empty{}, netError("open tap", err)
	}
	owner := -1
	if c.Peer.UID != 0 {
		owner = int(c.Peer.UID)
	}
	f, err := s.net.OpenTap(ctx, p.Name, owner)
	if err != nil {
		return api.Empty{}, netError(fmt.Sprintf("open tap %q", p.Name), err)
	}
	defer f.Close() // the caller gets its own copy
	if err := c.SendFile(f); err != nil {
		return api.Empty{}, api.Errorf(api.CodeInternal, "open tap %q: pass its descriptor: %v", p.Name, err)
	}
	c.Log.Info("tap opened and passed", "tap", p.Name, "peer_uid", c.Peer.UID, "peer_pid", c.Peer.PID)
	return api.Empty{}, nil
}

// deleteTap removes any banger tap. The owner is not limited to its own
// taps: it may tear the whole network down anyway, and taps carry banger's
// reserved prefix.
func (s *netService) deleteTap(ctx context.Context, c *rpc.Call, p api.TapRef) (api.Empty, error) {
	if err := s.ready(); err != nil {
		return api.Empty{}, err
	}
	if err := hostnat.ValidateTapName(p.Name); err != nil {
		return api.Empty{}, netError("delete tap", err)
	}
	if err := s.net.DeleteTap(ctx, p.Name); err != nil {
		return api.Empty{}, netError(fmt.Sprintf("delete tap %q", p.Name), err)
	}
	c.Log.Info("tap deleted", "tap", p.Name, "peer_uid", c.Peer.UID)
	return api.Empty{}, nil
}

// netError maps hostnat's sentinels to wire codes.
func netError(doing string, err error) error {
	code := api.CodeInternal
	switch {
	case errors.Is(err, hostnat.ErrInvalidName), errors.Is(err, hostnat.ErrInvalidOwner), errors.Is(err, hostnat.ErrOutOfPool),
		errors.Is(err, hostnat.ErrInvalidGuest):
		code = api.CodeInvalidArgument
	case errors.Is(err, hostnat.ErrNoTap):
		code = api.CodeNotFound
	case errors.Is(err, hostnat.ErrNotOurs), errors.Is(err, hostnat.ErrNoBridge), errors.Is(err, hostnat.ErrTapBusy),
		errors.Is(err, hostnat.ErrSubnetOverlap), errors.Is(err, hostnat.ErrInvalidConfig):
		code = api.CodeFailedPrecondition
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code = api.CodeCanceled
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, doing) { // hostnat often says it already
		msg = doing + ": " + msg
	}
	return &api.Error{Code: code, Message: msg}
}
