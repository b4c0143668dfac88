package vmm

import (
	"context"
	"errors"
	"fmt"

	"github.com/bangerdev/banger/internal/kvmprobe"
	"github.com/bangerdev/banger/internal/model"
)

// Select picks the driver for pref (auto, "" or a model.VMMKind):
// auto takes firecracker when it is available and KVM can run a standard
// kernel, else qemu (which falls back to TCG). An explicit choice that
// cannot work here is an error saying why.
func Select(ctx context.Context, pref model.VMMKind, kvm kvmprobe.Result, drivers ...Driver) (Driver, error) {
	byName := map[model.VMMKind]Driver{}
	for _, d := range drivers {
		byName[d.Name()] = d
	}
	usable := func(d Driver) error {
		if d == nil {
			return fmt.Errorf("%w: not built in", ErrUnavailable)
		}
		if err := d.Available(ctx); err != nil {
			return err
		}
		if d.Capabilities().NeedsKVM && !kvm.Usable {
			return fmt.Errorf("%w: needs KVM: %s", ErrUnavailable, kvm.Reason)
		}
		return nil
	}
	switch pref {
	case model.VMMAuto, "":
		fcErr := usable(byName[model.VMMFirecracker])
		if fcErr == nil {
			return byName[model.VMMFirecracker], nil
		}
		qErr := usable(byName[model.VMMQEMU])
		if qErr == nil {
			return byName[model.VMMQEMU], nil
		}
		return nil, fmt.Errorf("no vmm driver can run here: %w", errors.Join(
			fmt.Errorf("firecracker: %w", fcErr), fmt.Errorf("qemu: %w", qErr)))
	case model.VMMQEMU, model.VMMFirecracker:
		d := byName[pref]
		if err := usable(d); err != nil {
			return nil, fmt.Errorf("vmm %q cannot run here: %w", pref, err)
		}
		return d, nil
	default:
		return nil, fmt.Errorf("unknown vmm %q (want auto, qemu or firecracker)", pref)
	}
}
