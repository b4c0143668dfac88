package cli

import (
	"context"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
)

// nameLister lists one kind of object's names with one API call.
type nameLister func(ctx context.Context, c *rpc.Client) ([]string, error)

// nameKinds is every kind shell completion can name. Adding a kind is one
// line here.
var nameKinds = map[string]nameLister{
	"vm":    listNames(api.MethodVMList, func(r api.VMList) []string { return pluck(r.VMs, func(v model.VM) string { return v.Name }) }),
	"image": listNames(api.MethodImageList, func(r api.ImageList) []string { return pluck(r.Images, func(v model.Image) string { return v.Name }) }),
	"kernel": listNames(api.MethodKernelList, func(r api.KernelList) []string {
		return pluck(r.Kernels, func(v model.Kernel) string { return v.Name })
	}),
	"snapshot": listNames(api.MethodSnapshotList, func(r []model.Snapshot) []string { return pluck(r, func(v model.Snapshot) string { return v.Name }) }),
}

func listNames[R any](m api.Method[api.Empty, R], names func(R) []string) nameLister {
	return func(ctx context.Context, c *rpc.Client) ([]string, error) {
		r, err := rpc.Invoke(ctx, c, m, api.Empty{})
		if err != nil {
			return nil, err
		}
		return names(r), nil
	}
}

func pluck[T any](items []T, name func(T) string) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, name(it))
	}
	return out
}

// completeNames completes the names of kind from a running daemon (it never
// starts one: a completion must be instant), leaving out names already on
// the command line.
func (a *app) completeNames(kind string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		list := nameKinds[kind]
		p, err := a.paths()
		if list == nil || err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		names, err := list(cmd.Context(), rpc.NewClient(p.Socket()))
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		out := names[:0]
		for _, n := range names {
			if strings.HasPrefix(n, toComplete) && !slices.Contains(args, n) {
				out = append(out, n)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
