package vmlife

import (
	"errors"
	"net/netip"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/policy"
)

// checkPublish refuses -p mappings the VM's policy would never forward, at
// create rather than silently at run time.
func checkPublish(name string, pol model.VMPolicy, pub model.VMPublish) error {
	if err := pub.Validate(); err != nil {
		return api.Errorf(api.CodeInvalidArgument, "--publish: %v", err)
	}
	vp := policy.VM{Name: name, ForwardDeny: pol.ForwardDeny}
	for _, m := range pub.Ports {
		if err := vp.Forwardable(netip.AddrFrom4([4]byte{127, 0, 0, 1}), m.Guest); err != nil {
			if errors.Is(err, policy.ErrDenied) {
				return api.Errorf(api.CodePermissionDenied, "--publish %d: %v", m.Guest, err)
			}
			return api.Errorf(api.CodeInvalidArgument, "--publish %d: %v", m.Guest, err)
		}
	}
	return nil
}
