package cli

import (
	"context"
	"fmt"
	"os"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/imagecat"
	"github.com/bangerdev/banger/internal/termsafe"
	"github.com/bangerdev/banger/internal/toolingplan"
)

// workspacePlan applies the project's tooling plan to a --workspace VM:
// the image becomes the base image plus the planned Debian packages
// (image.plan builds it once per plan and keeps it). What cannot be
// satisfied, or a plan that cannot be made, is said on stderr and the VM
// boots anyway; a plan with nothing to install keeps the base image.
func (a *app) workspacePlan(ctx context.Context, f *createFlags, p *api.VMCreate) error {
	if !f.workspace || f.noPlan {
		return nil
	}
	warn := func(format string, args ...any) {
		fmt.Fprintf(a.env.Stderr, "plan: "+format+"\n", args...)
	}
	cat, err := imagecat.Load()
	if err != nil {
		return fmt.Errorf("load the image catalog: %w", err)
	}
	var base imagecat.Entry
	if p.Image == "" {
		if base, err = cat.DefaultEntry(); err != nil {
			return err
		}
	} else if base, err = cat.Lookup(p.Image); err != nil || base.Kind != imagecat.KindDebootstrap {
		warn("image %s is not a Debian catalog image: the project's tools are not installed", p.Image)
		return nil
	}
	root, err := os.OpenRoot(p.Workdir)
	if err != nil {
		return fmt.Errorf("--workspace: open %s: %w", p.Workdir, err)
	}
	defer root.Close()
	reqs, err := toolingplan.Detect(root.FS())
	if err != nil {
		warn("read project files: %v: booting %s without the project's tools", err, base.Name)
		return nil
	}
	if len(reqs) == 0 {
		return nil
	}
	// The plan image is debootstrapped from the base's suite alone, so
	// the plan resolves there: what it names is what gets installed.
	lookup, err := a.planLookup(ctx, base.Suite, f.planPackages, true)
	if err != nil {
		warn("%v: booting %s without the project's tools (--no-plan skips planning)", err, base.Name)
		return nil
	}
	plan, err := toolingplan.Make(ctx, reqs, lookup)
	if err != nil {
		warn("%v: booting %s without the project's tools (--no-plan skips planning)", err, base.Name)
		return nil
	}
	for _, s := range plan.Steps {
		if !s.Satisfied {
			// Project files may come from anywhere: no escape sequence reaches the terminal.
			warn("%s (%s): %s", termsafe.Line(s.Tool), termsafe.Line(s.Source), termsafe.Line(s.Reason))
		}
	}
	pkgs := planPackages(plan)
	if len(pkgs) == 0 {
		warn("nothing to install: using %s", base.Name)
		return nil
	}
	res, err := callWithProgress(ctx, a, api.MethodImagePlan, api.ImagePlan{Base: base.Name, Packages: pkgs})
	if err != nil {
		return fmt.Errorf("make the workspace's plan image (--no-plan boots %s as it is): %w", base.Name, err)
	}
	how := "built"
	if res.Cached {
		how = "reused"
	}
	warn("image %s %s (%s)", res.Image.Name, how, res.Image.Source)
	p.Image = res.Image.Name
	return nil
}

// planPackages lists the packages of a plan's satisfied steps, once each,
// at the version the plan resolved.
func planPackages(plan toolingplan.Plan) []api.PlanPackage {
	var pkgs []api.PlanPackage
	seen := map[string]bool{}
	for _, s := range plan.Steps {
		if s.Satisfied && !seen[s.Package] {
			seen[s.Package] = true
			pkgs = append(pkgs, api.PlanPackage{Name: s.Package, Version: s.Available})
		}
	}
	return pkgs
}
