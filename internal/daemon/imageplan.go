package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/imagecat"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/store"
)

func (d *Daemon) imagePlanMethods(m *rpc.Methods) {
	rpc.Register(m, api.MethodImagePlan, d.imagePlan)
}

// imagePlan returns the plan image of a base catalog entry and a plan's
// packages, building it the first time: its name carries the plan's hash,
// so an image of that name is this plan's, and is reused.
func (d *Daemon) imagePlan(ctx context.Context, c *rpc.Call, p api.ImagePlan) (_ api.ImagePlanned, err error) {
	cat, err := imagecat.Load()
	if err != nil {
		return api.ImagePlanned{}, err
	}
	if p.Base == "" {
		def, err := cat.DefaultEntry()
		if err != nil {
			return api.ImagePlanned{}, err
		}
		p.Base = def.Name
	}
	base, err := cat.Lookup(p.Base)
	if err != nil {
		return api.ImagePlanned{}, api.Errorf(api.CodeNotFound, "plan image: %v (catalog images: %s)", err, catalogNames(cat))
	}
	pkgs := make([]imagecat.PlanPackage, len(p.Packages))
	for i, x := range p.Packages {
		pkgs[i] = imagecat.PlanPackage(x)
	}
	if pkgs, err = imagecat.ValidatePlan(pkgs); err != nil {
		return api.ImagePlanned{}, api.Errorf(api.CodeInvalidArgument, "plan image on %s: %v", base.Name, err)
	}
	e, err := imagecat.PlanEntry(base, pkgs)
	if err != nil {
		return api.ImagePlanned{}, api.Errorf(api.CodeInvalidArgument, "plan image on %s: %v", base.Name, err)
	}
	c.SetTarget(e.Name)
	if img, err := d.store.GetImage(ctx, e.Name); err == nil {
		return api.ImagePlanned{Image: img, Cached: true}, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return api.ImagePlanned{}, err
	}
	st := d.imageStore()
	out, done, err := d.prepareImage(st, e.Name)
	if err != nil {
		return api.ImagePlanned{}, err
	}
	defer func() { done(err) }()
	c.Log.InfoContext(ctx, "build plan image", "image", e.Name, "base", base.Name, "packages", imagecat.PlanSourceSuffix(pkgs))
	var res imagecat.Result
	if os.Geteuid() == 0 {
		res, err = imagecat.BuildDebootstrap(ctx, e, imagecat.BuildOptions{
			Out: out, WorkDir: d.paths.Cache, Logger: c.Log, Progress: c.ProgressFunc(),
			Check:        func(rootfs string) error { return imagecat.CheckInstalled(rootfs, pkgs) },
			SourceSuffix: imagecat.PlanSourceSuffix(pkgs),
		})
		if err != nil {
			return api.ImagePlanned{}, fmt.Errorf("build plan image %q: %w", e.Name, err)
		}
	} else {
		built, berr := d.helper.BuildPlanImage(ctx, base.Name, p.Packages, c.ProgressFunc())
		if berr != nil {
			err = fmt.Errorf("build plan image %q through the root helper (debootstrap needs root): %w", e.Name, berr)
			return api.ImagePlanned{}, err
		}
		if want, _ := filepath.Abs(out); built.Path != want {
			err = api.Errorf(api.CodeFailedPrecondition, "build plan image %q: the root helper wrote %s, not this daemon's %s: the helper and the daemon disagree on BANGER_HOME", e.Name, built.Path, want)
			return api.ImagePlanned{}, err
		}
		res = imagecat.Result{Name: built.Name, Source: built.Source, Digest: built.Digest, SizeBytes: built.SizeBytes, Path: built.Path, CreatedAt: built.CreatedAt}
	}
	img, err := d.recordImage(ctx, "image-plan", st, res)
	if err != nil {
		return api.ImagePlanned{}, err
	}
	return api.ImagePlanned{Image: img}, nil
}
