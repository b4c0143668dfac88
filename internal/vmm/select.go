package vmm

import (
	"context"
	"errors"
	"fmt"

	"github.com/bangerdev/banger/internal/kvmprobe"
)

// Driver names and the automatic choice.
const (
	Auto        = "auto"
	QEMU        = "qemu"
	Firecracker = "firecracker"
)

// Select picks the driver for pref ("auto", "qemu" or "firecracker"):
// auto takes firecracker when it is available and KVM can run a standard
// kernel, else qemu (which falls back to TCG). An explicit choice that
// cannot work here is an error saying why.
func Select(ctx context.Context, pref string, kvm kvmprobe.Result, drivers ...Driver) (Driver, error) {
	byName := map[string]Driver{}
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
	case Auto, "":
		fcErr := usable(byName[Firecracker])
		if fcErr == nil {
			return byName[Firecracker], nil
		}
		qErr := usable(byName[QEMU])
		if qErr == nil {
			return byName[QEMU], nil
		}
		return nil, fmt.Errorf("no vmm driver can run here: %w", errors.Join(
			fmt.Errorf("firecracker: %w", fcErr), fmt.Errorf("qemu: %w", qErr)))
	case QEMU, Firecracker:
		d := byName[pref]
		if err := usable(d); err != nil {
			return nil, fmt.Errorf("vmm %q cannot run here: %w", pref, err)
		}
		return d, nil
	default:
		return nil, fmt.Errorf("unknown vmm %q (want auto, qemu or firecracker)", pref)
	}
}
