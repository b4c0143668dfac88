package roothelper

import (
	"context"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
)

// Client is the typed client of the root helper. The op_id of every call is
// taken from ctx (rpc.WithOpID), so helper log lines carry the daemon
// request's id.
type Client struct{ rpc *rpc.Client }

// NewClient returns a client for the helper socket.
func NewClient(socket string) *Client { return &Client{rpc: rpc.NewClient(socket)} }

// Socket returns the helper's socket path.
func (c *Client) Socket() string { return c.rpc.Socket }

// Ping checks that the helper answers and admits us.
func (c *Client) Ping(ctx context.Context) error {
	_, err := rpc.Invoke(ctx, c.rpc, api.MethodHelperPing, api.Empty{})
	return err
}

// Identity returns the helper's pid, build and owner.
func (c *Client) Identity(ctx context.Context) (api.HelperIdentity, error) {
	return rpc.Invoke(ctx, c.rpc, api.MethodHelperIdentity, api.Empty{})
}

// Shutdown stops a managed (daemon-spawned) helper.
func (c *Client) Shutdown(ctx context.Context) error {
	_, err := rpc.Invoke(ctx, c.rpc, api.MethodHelperShutdown, api.Empty{})
	return err
}
