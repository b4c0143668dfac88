package roothelper

import (
	"context"
	"os"

	"github.com/bangerdev/banger/internal/api"
)

// StartJailer has the helper jail and start Firecracker for vm (from the
// files of its VM dir) and returns a connection to its API socket, which
// the caller owns and closes.
func (c *Client) StartJailer(ctx context.Context, vmID string) (*os.File, api.VMJailerStarted, error) {
	return invokeWithFile(ctx, c, api.MethodHelperVMJailerStart, api.VMJailerRef{VMID: vmID})
}

// ConnectJailer returns a fresh connection to socket (api.JailerSocketAPI
// or api.JailerSocketVsock) of vm's running jail.
func (c *Client) ConnectJailer(ctx context.Context, vmID, socket string) (*os.File, api.VMJailerStarted, error) {
	return invokeWithFile(ctx, c, api.MethodHelperVMJailerConnect, api.VMJailerConnect{VMID: vmID, Socket: socket})
}

// StopJailer kills vm's jailed Firecracker and removes its jail.
func (c *Client) StopJailer(ctx context.Context, vmID string) error {
	_, err := invoke(ctx, c, api.MethodHelperVMJailerStop, api.VMJailerRef{VMID: vmID})
	return err
}
