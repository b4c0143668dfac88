package agentclient

import (
	"context"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
)

// Freeze asks the guest to sync and freeze its root filesystem; it thaws by
// itself after autoThaw unless Thaw comes first.
func (c *Client) Freeze(ctx context.Context, autoThaw time.Duration) error {
	return c.unary(ctx, agentproto.MethodFreeze, agentproto.Freeze{AutoThawSeconds: int(autoThaw / time.Second)}, nil)
}

// Thaw undoes Freeze.
func (c *Client) Thaw(ctx context.Context) error {
	return c.unary(ctx, agentproto.MethodThaw, nil, nil)
}

// Reidentify hands a clone its own identity; health answers with
// id.BootID once it returns.
func (c *Client) Reidentify(ctx context.Context, id agentproto.Identity) (agentproto.Reidentified, error) {
	var out agentproto.Reidentified
	err := c.unary(ctx, agentproto.MethodReidentify, id, &out)
	return out, err
}
