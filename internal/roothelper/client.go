package roothelper

import (
	"context"
	"fmt"
	"os"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
)

// Client is the typed client of the root helper. The op_id of every call is
// taken from ctx (rpc.WithOpID), so helper log lines carry the daemon
// request's id.
//
// A Client keeps at most maxClientCalls calls in flight and makes the rest
// wait for a slot (bounded by their ctx): the helper refuses connections
// past its cap, and a daemon under load (many clients creating VMs and
// asking for status at once) must not be refused by its own helper. Half
// the cap leaves room for other callers (banger doctor, a second daemon).
type Client struct {
	rpc   *rpc.Client
	slots chan struct{}
}

const maxClientCalls = maxConns / 2

// NewClient returns a client for the helper socket.
func NewClient(socket string) *Client {
	return &Client{rpc: rpc.NewClient(socket), slots: make(chan struct{}, maxClientCalls)}
}

// acquire waits for one of the client's call slots.
func (c *Client) acquire(ctx context.Context, method string) (release func(), err error) {
	select {
	case c.slots <- struct{}{}:
		return func() { <-c.slots }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: wait for a free root helper connection: %w", method, ctx.Err())
	}
}

func (c *Client) call(ctx context.Context, method string, params, result any, opts ...rpc.CallOptions) error {
	release, err := c.acquire(ctx, method)
	if err != nil {
		return err
	}
	defer release()
	return c.rpc.Call(ctx, method, params, result, opts...)
}

func (c *Client) callWithFile(ctx context.Context, method string, params, result any) (*os.File, error) {
	release, err := c.acquire(ctx, method)
	if err != nil {
		return nil, err
	}
	defer release()
	return c.rpc.CallWithFile(ctx, method, params, result)
}

// Socket returns the helper's socket path.
func (c *Client) Socket() string { return c.rpc.Socket }

// Ping checks that the helper answers and admits us.
func (c *Client) Ping(ctx context.Context) error {
	return c.call(ctx, api.MethodHelperPing, nil, nil)
}

// Identity returns the helper's pid, build and owner.
func (c *Client) Identity(ctx context.Context) (api.HelperIdentity, error) {
	var id api.HelperIdentity
	err := c.call(ctx, api.MethodHelperIdentity, nil, &id)
	return id, err
}

// Shutdown stops a managed (daemon-spawned) helper.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.call(ctx, api.MethodHelperShutdown, nil, nil)
}
