// Package netattach puts VMs on banger's guest network for the owner
// daemon: an address leased in the store and a tap made by the root helper.
// It implements vmlife.Network.
//
// Order matters for crash safety: the tap is recorded as a net object before
// the helper creates it and the record is removed only once the tap is gone,
// so a tap left behind by a crash always has a record cleanup can act on.
package netattach

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guest/guestconfig"
	"github.com/bangerdev/banger/internal/guestnet"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/policy"
	"github.com/bangerdev/banger/internal/roothelper"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmlife"
)

var _ vmlife.Network = (*Attacher)(nil)

// Config holds the Attacher's collaborators.
type Config struct {
	Helper *roothelper.Client
	Store  *store.Store
	// OwnerUID and OwnerGID own every tap: the daemon's own ids, so the VMM
	// it starts can open the tap without privileges.
	OwnerUID, OwnerGID int
	// DNS servers handed to guests; nil: the gateway, where vmdns answers.
	DNS []netip.Addr
	Log *slog.Logger
}

// Attacher gives VMs their lease and tap. It is safe for concurrent use;
// calls for one VM are expected to be serialised by the caller (the VM
// lifecycle holds a per-VM lock).
type Attacher struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex
	plan guestnet.Plan
	up   bool // the helper brought the network up for this Attacher
}

// New checks cfg and returns its Attacher. The host network is brought up
// on the first Attach, not here: a daemon whose VMs never use the network
// never asks the helper for it.
func New(cfg Config) (*Attacher, error) {
	if cfg.Helper == nil || cfg.Store == nil {
		return nil, errors.New("netattach: helper client and store are required")
	}
	if cfg.OwnerUID < 0 || cfg.OwnerGID < 0 {
		return nil, fmt.Errorf("netattach: invalid tap owner %d:%d", cfg.OwnerUID, cfg.OwnerGID)
	}
	for _, d := range cfg.DNS {
		if !d.IsValid() {
			return nil, errors.New("netattach: invalid dns server")
		}
	}
	lg := cfg.Log
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	return &Attacher{cfg: cfg, log: lg}, nil
}

// ensureUp asks the helper to bring the network up once and learns the
// plan (subnet, gateway) from it: the helper's config is the one truth.
func (a *Attacher) ensureUp(ctx context.Context) (guestnet.Plan, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.up {
		return a.plan, nil
	}
	info, err := a.cfg.Helper.NetworkUp(ctx)
	if err != nil {
		return guestnet.Plan{}, fmt.Errorf("bring up host network: %w", err)
	}
	subnet, err := netip.ParsePrefix(info.Subnet)
	if err != nil {
		return guestnet.Plan{}, fmt.Errorf("root helper reports subnet %q: %w", info.Subnet, err)
	}
	plan, err := guestnet.NewPlan(subnet)
	if err != nil {
		return guestnet.Plan{}, fmt.Errorf("root helper's subnet: %w", err)
	}
	if plan.Gateway.String() != info.Gateway {
		return guestnet.Plan{}, fmt.Errorf("root helper reports gateway %q, want %s for subnet %s", info.Gateway, plan.Gateway, subnet)
	}
	a.plan, a.up = plan, true
	a.log.InfoContext(ctx, "host network up", "bridge", info.Bridge, "subnet", info.Subnet)
	return plan, nil
}

func (a *Attacher) forgetUp() {
	a.mu.Lock()
	a.up = false
	a.mu.Unlock()
}

// Attach leases the VM an address and makes its tap. Calling it again for
// the same VM returns the same lease and tap (and remakes a tap that has
// gone, e.g. after `network down`). On failure it undoes what it made.
func (a *Attacher) Attach(ctx context.Context, vm model.VM) (vmlife.Attachment, error) {
	att, err := a.attach(ctx, vm)
	if err != nil {
		return vmlife.Attachment{}, fmt.Errorf("attach vm %q to the network: %w", vm.Name, err)
	}
	return att, nil
}

func (a *Attacher) attach(ctx context.Context, vm model.VM) (vmlife.Attachment, error) {
	if err := model.ValidateVMID(vm.ID); err != nil {
		return vmlife.Attachment{}, err
	}
	plan, err := a.ensureUp(ctx)
	if err != nil {
		return vmlife.Attachment{}, err
	}
	mac := guestnet.MACForVM(vm.ID).String()
	// The lease copies the MAC from the VM's row: set it first.
	if err := a.setMAC(ctx, vm.ID, mac); err != nil {
		return vmlife.Attachment{}, err
	}

	_, err = a.cfg.Store.LeaseForVM(ctx, vm.ID)
	newLease := errors.Is(err, store.ErrNotFound)
	if err != nil && !newLease {
		return vmlife.Attachment{}, err
	}
	lease, err := a.cfg.Store.AllocateLease(ctx, vm.ID, plan.Subnet, []netip.Addr{plan.Gateway})
	if err != nil {
		return vmlife.Attachment{}, err
	}
	tap := guestnet.TapName(vm.ID)
	u := undo{a: a, vmID: vm.ID, tap: tap, lease: newLease}
	fail := func(err error) (vmlife.Attachment, error) {
		if uerr := u.run(context.WithoutCancel(ctx)); uerr != nil {
			err = errors.Join(err, fmt.Errorf("undo: %w", uerr))
		}
		return vmlife.Attachment{}, err
	}

	addr, err := netip.ParseAddr(lease.IP)
	if err != nil {
		return fail(fmt.Errorf("stored lease %q: %w", lease.IP, err))
	}
	gn, err := guestnet.GuestConfigNetwork(addr, plan, a.cfg.DNS)
	if err != nil {
		return fail(err)
	}

	recorded, err := a.recordedTaps(ctx, vm.ID)
	if err != nil {
		return fail(err)
	}
	u.record = !slices.Contains(recorded, tap)
	if _, err := a.cfg.Store.RecordNetObject(ctx, model.NetObject{Kind: model.NetTap, Name: tap, VMID: vm.ID}); err != nil {
		u.record = false // not ours to remove (another VM's, or not written)
		return fail(err)
	}
	pol, err := policy.FromModel(vm)
	if err != nil {
		return fail(err)
	}
	var deny []string
	for _, p := range pol.Egress() {
		deny = append(deny, p.String())
	}
	req := api.TapCreate{Name: tap, OwnerUID: a.cfg.OwnerUID, OwnerGID: a.cfg.OwnerGID,
		MAC: mac, IP: addr.String(), Network: vm.Network, DenyEgress: deny}
	if err := a.createTap(ctx, req); err != nil {
		// A refusal (bad argument, a foreign interface by that name) made
		// nothing; any other failure may have left a half-made tap.
		switch api.CodeOf(err) {
		case api.CodeInvalidArgument, api.CodePermissionDenied, api.CodeFailedPrecondition:
		default:
			u.tapMade = u.record
		}
		return fail(fmt.Errorf("create tap %q: %w", tap, err))
	}

	a.log.InfoContext(ctx, "vm attached", "vm", vm.Name, "ip", addr.String(), "tap", tap, "network", vm.Network, "deny_egress", deny)
	return vmlife.Attachment{
		Tap: tap,
		MAC: mac,
		Guest: &guestconfig.Network{
			Address: gn.Address,
			Gateway: gn.Gateway,
			DNS:     gn.DNS,
			MAC:     mac,
		},
	}, nil
}

// createTap asks the helper for the tap. A failed precondition may mean the
// network was taken down since ensureUp (`banger system network down`):
// bring it up once more and retry once.
func (a *Attacher) createTap(ctx context.Context, req api.TapCreate) error {
	err := a.cfg.Helper.CreateTap(ctx, req)
	if api.CodeOf(err) != api.CodeFailedPrecondition {
		return err
	}
	a.forgetUp()
	if _, uerr := a.ensureUp(ctx); uerr != nil {
		return errors.Join(err, uerr)
	}
	return a.cfg.Helper.CreateTap(ctx, req)
}

// OpenTap has the root helper open the VM's tap and pass the descriptor
// back, for a VMM that must not need /dev/net/tun itself. The caller owns
// the file.
func (a *Attacher) OpenTap(ctx context.Context, vm model.VM) (*os.File, error) {
	if vm.Tap == "" {
		return nil, fmt.Errorf("open tap of vm %q: it is not attached to the network", vm.Name)
	}
	f, err := a.cfg.Helper.OpenTap(ctx, vm.Tap)
	if err != nil {
		return nil, fmt.Errorf("open tap %q of vm %q: %w", vm.Tap, vm.Name, err)
	}
	return f, nil
}

// setMAC stores mac on the VM's row unless it is there already.
func (a *Attacher) setMAC(ctx context.Context, vmID, mac string) error {
	cur, err := a.cfg.Store.GetVM(ctx, vmID)
	if err != nil {
		return err
	}
	if cur.ID != vmID { // GetVM prefers a name spelled like this id
		return fmt.Errorf("vm id %s: %w", vmID, store.ErrNotFound)
	}
	if cur.MAC == mac {
		return nil
	}
	cur.MAC = mac
	if _, err := a.cfg.Store.UpdateVM(ctx, cur); err != nil {
		return fmt.Errorf("record mac of vm %q: %w", cur.Name, err)
	}
	return nil
}

func (a *Attacher) recordedTaps(ctx context.Context, vmID string) ([]string, error) {
	objs, err := a.cfg.Store.ListNetObjectsByVM(ctx, vmID)
	if err != nil {
		return nil, err
	}
	var taps []string
	for _, o := range objs {
		if o.Kind == model.NetTap {
			taps = append(taps, o.Name)
		}
	}
	return taps, nil
}

// undo reverts what a failed Attach made, and only that: a re-attach that
// fails leaves the VM's earlier lease and tap record alone.
type undo struct {
	a      *Attacher
	vmID   string
	tap    string
	lease  bool // the lease is new
	record bool // the tap's record is new
	// Delete the tap (it may be half made). Its record is removed only once
	// the tap is gone.
	tapMade bool
}

func (u undo) run(ctx context.Context) error {
	var errs []error
	tapGone := true
	if u.tapMade {
		if err := u.a.cfg.Helper.DeleteTap(ctx, u.tap); err != nil {
			errs = append(errs, fmt.Errorf("delete tap %q: %w", u.tap, err))
			tapGone = false
		}
	}
	if u.record && tapGone {
		errs = append(errs, u.a.cfg.Store.RemoveNetObject(ctx, model.NetTap, u.tap))
	}
	if u.lease {
		errs = append(errs, u.a.cfg.Store.ReleaseLease(ctx, u.vmID))
	}
	return errors.Join(errs...)
}

// Detach deletes the VM's taps (those recorded for it and vm.Tap), forgets
// each record once its tap is gone, and releases the lease. Idempotent. A VM
// with no tap recorded never needs the helper.
func (a *Attacher) Detach(ctx context.Context, vm model.VM) error {
	if err := model.ValidateVMID(vm.ID); err != nil {
		return fmt.Errorf("detach vm %q from the network: %w", vm.Name, err)
	}
	taps, err := a.recordedTaps(ctx, vm.ID)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	if vm.Tap != "" && !slices.Contains(taps, vm.Tap) {
		taps = append(taps, vm.Tap)
	}
	for _, tap := range taps {
		if err := a.cfg.Helper.DeleteTap(ctx, tap); err != nil {
			errs = append(errs, fmt.Errorf("delete tap %q: %w", tap, err))
			continue // keep the record: the tap may still exist
		}
		if err := a.cfg.Store.RemoveNetObject(ctx, model.NetTap, tap); err != nil {
			errs = append(errs, err)
		}
	}
	if err := a.cfg.Store.ReleaseLease(ctx, vm.ID); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("detach vm %q from the network: %w", vm.Name, err)
	}
	a.log.InfoContext(ctx, "vm detached", "vm", vm.Name, "taps", taps)
	return nil
}
