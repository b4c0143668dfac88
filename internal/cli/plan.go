package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/debarchive"
	"github.com/bangerdev/banger/internal/imagecat"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/toolingplan"
)

func newPlanCommand(a *app) *cobra.Command {
	var (
		asJSON, build   bool
		suite, packages string
	)
	cmd := &cobra.Command{
		Use:   "plan [DIR]",
		Short: "Show how a project's tools would be installed in a Debian image",
		Long: `Read what the project in DIR (default: the current directory) asks of its
tools: go.mod (go, toolchain), package.json (engines) and .nvmrc, Cargo.toml
(rust-version) and rust-toolchain.toml, pyproject.toml (requires-python) and
.python-version, .tool-versions, mise.toml, and the commands a Makefile's
recipes run. For each, print the version asked, the file that asks, and how
the image's Debian suite satisfies it: the package and its version, or
"not satisfiable from the distro: X wanted, Y available". A version is
never silently downgraded.

Package versions come from the suite's Packages index, fetched from the
host's apt sources and verified against their signed InRelease (as kernel
pulls are); --packages reads a local, plain Packages file instead.`,
		Example: `  banger plan
  banger plan ~/src/app --json | jq '.steps[] | select(.satisfied | not)'
  banger plan --packages ./Packages
  banger plan --build          # the image vm run --workspace would boot, built now`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				return &UsageError{Err: fmt.Errorf("%s is not a directory", dir)}
			}
			root, err := os.OpenRoot(dir)
			if err != nil {
				return fmt.Errorf("open project directory: %w", err)
			}
			defer root.Close()
			reqs, err := toolingplan.Detect(root.FS())
			if err != nil {
				return fmt.Errorf("read project files in %s: %w", dir, err)
			}
			if build && suite != "" {
				return &UsageError{Err: fmt.Errorf("--build plans against the default image's suite: drop --suite")}
			}
			if suite == "" {
				if suite, err = defaultSuite(); err != nil {
					return err
				}
			}
			lookup, err := a.planLookup(cmd.Context(), suite, packages, build)
			if err != nil {
				return err
			}
			plan, err := toolingplan.Make(cmd.Context(), reqs, lookup)
			if err != nil {
				return fmt.Errorf("plan tools for %s: %w", dir, err)
			}
			if !build {
				if asJSON {
					return printJSON(cmd.OutOrStdout(), plan)
				}
				plan.Text(cmd.OutOrStdout())
				return nil
			}
			out := planBuilt{Plan: plan}
			if pkgs := planPackages(plan); len(pkgs) > 0 {
				res, err := callWithProgress(cmd.Context(), a, api.MethodImagePlan, api.ImagePlan{Packages: pkgs})
				if err != nil {
					return fmt.Errorf("build the plan image for %s: %w", dir, err)
				}
				out.Image, out.Cached = &res.Image, res.Cached
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), out)
			}
			plan.Text(cmd.OutOrStdout())
			switch {
			case out.Image == nil:
				fmt.Fprintln(cmd.OutOrStdout(), "\nnothing to install: the base image serves as it is")
			case out.Cached:
				fmt.Fprintf(cmd.OutOrStdout(), "\nimage: %s (already built)\n", out.Image.Name)
			default:
				fmt.Fprintf(cmd.OutOrStdout(), "\nimage: %s (built)\n", out.Image.Name)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&build, "build", false, "also build (or find) the image with the planned packages, as vm run --workspace does; plans against the default image's release suite alone")
	cmd.Flags().StringVar(&suite, "suite", "", "Debian suite to plan against (default: the default image's)")
	cmd.Flags().StringVar(&packages, "packages", "", "read package versions from this plain Packages file instead of the archive")
	return cmd
}

func defaultSuite() (string, error) {
	cat, err := imagecat.Load()
	if err != nil {
		return "", fmt.Errorf("load the image catalog: %w", err)
	}
	e, err := cat.DefaultEntry()
	if err != nil {
		return "", err
	}
	return e.Suite, nil
}

// planBuilt is plan --build's JSON: the plan and its image.
type planBuilt struct {
	toolingplan.Plan
	Image  *model.Image `json:"image,omitempty"`
	Cached bool         `json:"cached"`
}

// planLookup reads a local Packages file, or the host's apt sources for
// suite and its updates and security suites (not backports, which apt
// does not install from unasked).
// With onlySuite, the updates and security suites are left out too (a plan
// image is debootstrapped from the release suite alone).
func (a *app) planLookup(ctx context.Context, suite, packagesFile string, onlySuite bool) (toolingplan.Lookup, error) {
	if packagesFile != "" {
		f, err := os.Open(packagesFile)
		if err != nil {
			return nil, &UsageError{Err: fmt.Errorf("--packages: %w", err)}
		}
		defer f.Close()
		return toolingplan.StaticIndex(f, suite+" ("+filepath.Base(packagesFile)+")")
	}
	srcs, err := debarchive.ReadHostSources("/")
	if err != nil {
		return nil, fmt.Errorf("read the host's apt sources: %w", err)
	}
	var keep []debarchive.Source
	for _, s := range srcs {
		s.Suites = slices.DeleteFunc(slices.Clone(s.Suites), func(x string) bool {
			return !(x == suite || !onlySuite && strings.HasPrefix(x, suite+"-") && !strings.HasSuffix(x, "-backports"))
		})
		if len(s.Suites) > 0 {
			keep = append(keep, s)
		}
	}
	if len(keep) == 0 {
		return nil, fmt.Errorf("the host's apt sources list no %q suite: pass --suite, or --packages with a Packages file of that suite", suite)
	}
	p, err := a.paths()
	if err != nil {
		return nil, err
	}
	arch, err := debarchive.New(debarchive.Config{Sources: keep, CacheDir: p.DownloadsDir()})
	if err != nil {
		return nil, err
	}
	return toolingplan.ArchiveLookup(arch), nil
}
