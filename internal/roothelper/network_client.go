package roothelper

import (
	"context"
	"os"

	"github.com/bangerdev/banger/internal/api"
)

// NetworkUp brings the helper's host network up (bridge, forwarding, NAT)
// and returns its config. Idempotent.
func (c *Client) NetworkUp(ctx context.Context) (api.NetworkInfo, error) {
	return invoke(ctx, c, api.MethodHelperNetworkUp, api.Empty{})
}

// NetworkDown removes banger's NAT table, every banger tap and the bridge.
func (c *Client) NetworkDown(ctx context.Context) error {
	_, err := invoke(ctx, c, api.MethodHelperNetworkDown, api.Empty{})
	return err
}

// NetworkState reports what exists of the host network.
func (c *Client) NetworkState(ctx context.Context) (api.NetworkState, error) {
	return invoke(ctx, c, api.MethodHelperNetworkState, api.Empty{})
}

// CreateTap makes tap p.Name, owned by p.OwnerUID/OwnerGID, on the bridge,
// bound to the guest's MAC and address. Idempotent for the same owner (the
// guest binding is replaced).
func (c *Client) CreateTap(ctx context.Context, p api.TapCreate) error {
	_, err := invoke(ctx, c, api.MethodHelperTapCreate, p)
	return err
}

// DeleteTap removes tap name; a missing tap is not an error.
func (c *Client) DeleteTap(ctx context.Context, name string) error {
	_, err := invoke(ctx, c, api.MethodHelperTapDelete, api.TapRef{Name: name})
	return err
}

// OpenTap has the helper open the existing tap name and returns the open
// descriptor, to hand to a VMM that cannot open /dev/net/tun itself. The
// caller owns the file and closes it once the VMM holds its copy.
func (c *Client) OpenTap(ctx context.Context, name string) (*os.File, error) {
	f, _, err := invokeWithFile(ctx, c, api.MethodHelperTapOpen, api.TapRef{Name: name})
	return f, err
}
