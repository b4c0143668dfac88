package roothelper

import (
	"context"
	"os"

	"github.com/bangerdev/banger/internal/api"
)

// NetworkUp brings the helper's host network up (bridge, forwarding, NAT)
// and returns its config. Idempotent.
func (c *Client) NetworkUp(ctx context.Context) (api.NetworkInfo, error) {
	var info api.NetworkInfo
	err := c.call(ctx, api.MethodNetworkUp, nil, &info)
	return info, err
}

// NetworkDown removes banger's NAT table, every banger tap and the bridge.
func (c *Client) NetworkDown(ctx context.Context) error {
	return c.call(ctx, api.MethodNetworkDown, nil, nil)
}

// NetworkState reports what exists of the host network.
func (c *Client) NetworkState(ctx context.Context) (api.NetworkState, error) {
	var st api.NetworkState
	err := c.call(ctx, api.MethodNetworkState, nil, &st)
	return st, err
}

// CreateTap makes tap p.Name, owned by p.OwnerUID/OwnerGID, on the bridge,
// bound to the guest's MAC and address. Idempotent for the same owner (the
// guest binding is replaced).
func (c *Client) CreateTap(ctx context.Context, p api.TapCreate) error {
	return c.call(ctx, api.MethodTapCreate, p, nil)
}

// DeleteTap removes tap name; a missing tap is not an error.
func (c *Client) DeleteTap(ctx context.Context, name string) error {
	return c.call(ctx, api.MethodTapDelete, api.TapRef{Name: name}, nil)
}

// OpenTap has the helper open the existing tap name and returns the open
// descriptor, to hand to a VMM that cannot open /dev/net/tun itself. The
// caller owns the file and closes it once the VMM holds its copy.
func (c *Client) OpenTap(ctx context.Context, name string) (*os.File, error) {
	return c.callWithFile(ctx, api.MethodTapOpen, api.TapRef{Name: name}, nil)
}
