package roothelper

import (
	"context"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/imagecat"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/rpc"
)

// plan serves image.plan: a debootstrap catalog entry with a project's
// planned packages added, built as image.build builds (same work dir,
// same install as the owner, one build at a time). The request carries a
// catalog entry name and package=version pairs, nothing else: each name
// and version is checked against Debian's grammar and the count is capped
// before any work, so nothing reaches debootstrap's argv that could read
// as an option or a path. debootstrap resolves the packages' dependencies
// from the suite's signed index and checks every .deb's hash; the versions
// installed are then checked against the plan.
func (b *imageBuilder) plan(ctx context.Context, c *rpc.Call, p api.HelperImagePlan) (api.HelperImageBuilt, error) {
	if c.Peer.UID != 0 && int(c.Peer.UID) != b.ownerUID {
		return api.HelperImageBuilt{}, api.Errorf(api.CodePermissionDenied, "build plan image: uid %d is neither root nor the owner uid %d", c.Peer.UID, b.ownerUID)
	}
	base, err := debootstrapEntry(p.Base)
	if err != nil {
		return api.HelperImageBuilt{}, err
	}
	pkgs := make([]imagecat.PlanPackage, len(p.Packages))
	for i, x := range p.Packages {
		pkgs[i] = imagecat.PlanPackage(x)
	}
	pkgs, err = imagecat.ValidatePlan(pkgs)
	if err != nil {
		return api.HelperImageBuilt{}, api.Errorf(api.CodeInvalidArgument, "build plan image on %q: %v", base.Name, err)
	}
	e, err := imagecat.PlanEntry(base, pkgs)
	if err != nil {
		return api.HelperImageBuilt{}, api.Errorf(api.CodeInvalidArgument, "build plan image on %q: %v", base.Name, err)
	}
	return b.buildEntry(ctx, c, e, imagecat.BuildOptions{
		Check:        func(rootfs string) error { return imagecat.CheckInstalled(rootfs, pkgs) },
		SourceSuffix: imagecat.PlanSourceSuffix(pkgs),
	})
}

// BuildPlanImage has the helper build base (a debootstrap catalog entry)
// with pkgs added into the owner's image store, streaming its progress to
// report (which may be nil).
func (c *Client) BuildPlanImage(ctx context.Context, base string, pkgs []api.PlanPackage, report progress.Func) (api.HelperImageBuilt, error) {
	return invoke(ctx, c, api.MethodHelperImagePlan, api.HelperImagePlan{Base: base, Packages: pkgs}, rpc.CallOptions{OnEvent: report})
}
