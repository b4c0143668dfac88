package roothelper

import (
	"context"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/rpc"
)

// BuildImage has the helper build catalog image name (a debootstrap entry)
// into the owner's image store, streaming its progress to report (which may
// be nil). The caller records the result in its store.
func (c *Client) BuildImage(ctx context.Context, name string, report progress.Func) (api.HelperImageBuilt, error) {
	return invoke(ctx, c, api.MethodHelperImageBuild, api.HelperImageBuild{Name: name}, rpc.CallOptions{OnEvent: report})
}
