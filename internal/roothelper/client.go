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

// invoke is rpc.Invoke within one of c's call slots.
func invoke[Req, Resp any](ctx context.Context, c *Client, m api.Method[Req, Resp], req Req, opts ...rpc.CallOptions) (Resp, error) {
	release, err := c.acquire(ctx, m.Name)
	if err != nil {
		var zero Resp
		return zero, err
	}
	defer release()
	return rpc.Invoke(ctx, c.rpc, m, req, opts...)
}

// invokeWithFile is rpc.InvokeWithFile within one of c's call slots.
func invokeWithFile[Req, Resp any](ctx context.Context, c *Client, m api.Method[Req, Resp], req Req) (*os.File, Resp, error) {
	release, err := c.acquire(ctx, m.Name)
	if err != nil {
		var zero Resp
		return nil, zero, err
	}
	defer release()
	return rpc.InvokeWithFile(ctx, c.rpc, m, req)
}

// Socket returns the helper's socket path.
func (c *Client) Socket() string { return c.rpc.Socket }

// Ping checks that the helper answers and admits us.
func (c *Client) Ping(ctx context.Context) error {
	_, err := invoke(ctx, c, api.MethodHelperPing, api.Empty{})
	return err
}

// Identity returns the helper's pid, build and owner.
func (c *Client) Identity(ctx context.Context) (api.HelperIdentity, error) {
	return invoke(ctx, c, api.MethodHelperIdentity, api.Empty{})
}

// Shutdown stops a managed (daemon-spawned) helper.
func (c *Client) Shutdown(ctx context.Context) error {
	_, err := invoke(ctx, c, api.MethodHelperShutdown, api.Empty{})
	return err
}
