package vmlife

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/policy"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
)

// MatchTemplate finds a template that `vm run` may restore instead of
// booting: one made from the same image and kernel, with the same size,
// init mode and network, no policy of its own and none asked for, under a
// VMM that can restore it. The request's zero values take create's
// defaults. "" when none fits.
func (m *Manager) MatchTemplate(ctx context.Context, r CreateRequest) (string, error) {
	if r.Image == "" {
		r.Image = DefaultImage
	}
	if r.Kernel == "" {
		r.Kernel = DefaultKernel
	}
	if r.InitMode == "" {
		r.InitMode = model.InitFast
	}
	if r.Network == "" {
		r.Network = model.NetworkIsolated
	}
	if r.CPUs == 0 {
		r.CPUs = min(DefaultCPUs, max(m.d.HostCPUs, 1))
	}
	if r.MemoryMiB == 0 {
		r.MemoryMiB = DefaultMemoryMiB
	}
	if r.DiskBytes == 0 {
		img, err := m.d.Store.GetImage(ctx, r.Image)
		if errors.Is(err, store.ErrNotFound) {
			return "", nil // create says what is wrong
		}
		if err != nil {
			return "", fmt.Errorf("look up image %q: %w", r.Image, err)
		}
		r.DiskBytes = max(img.SizeBytes, 2<<30)
	}
	pol, err := policy.Normalize(r.Policy)
	if err != nil {
		return "", api.Errorf(api.CodeInvalidArgument, "vm policy: %v", err)
	}
	all, err := m.d.Store.ListSnapshots(ctx)
	if err != nil {
		return "", err
	}
	for _, sn := range all {
		if sn.Kind != model.SnapshotKindTemplate || sn.Image != r.Image || sn.Kernel != r.Kernel ||
			sn.CPUs != r.CPUs || sn.MemoryMiB != r.MemoryMiB || sn.DiskBytes != r.DiskBytes ||
			sn.InitMode != r.InitMode || sn.Network != r.Network || !samePolicy(sn.Policy, pol) {
			continue
		}
		if r.VMM != "" && r.VMM != model.VMMAuto && r.VMM != sn.VMM {
			continue
		}
		drv, ok := m.d.Drivers[sn.VMM]
		if !ok || !drv.Capabilities().SupportsSnapshots || drv.Available(ctx) != nil {
			continue
		}
		if _, ok := drv.(vmm.Snapshotter); !ok {
			continue
		}
		return sn.Name, nil
	}
	return "", nil
}

// samePolicy compares normalised policies: a template's VMs keep the
// policy it was made with, so it must be the one asked for.
func samePolicy(a, b model.VMPolicy) bool {
	na, err := policy.Normalize(a)
	if err != nil {
		return false
	}
	return slices.Equal(na.DenyEgress, b.DenyEgress) && na.DenyPrivate == b.DenyPrivate && slices.Equal(na.ForwardDeny, b.ForwardDeny)
}
