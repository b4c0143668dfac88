package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
)

func newKernelCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kernel",
		Short: "Guest kernels: pull from the catalog, import, list, remove",
		Example: `  banger kernel pull                 # the default, Debian's cloud kernel
  banger kernel import mykernel ./bzImage --modules ./lib/modules/6.1.0
  banger kernel ls`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(newKernelPullCommand(a), newKernelImportCommand(a), newKernelLsCommand(a), newKernelInspectCommand(a), newKernelRmCommand(a))
	return cmd
}

func newKernelPullCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "pull [NAME]",
		Short: "Download a catalog kernel, verified, with its modules",
		Long: `Download a kernel from banger's embedded catalog. The default,
debian-cloud, is Debian's cloud kernel resolved through the Debian archive
on the host's apt mirror; its index signature and the package hash are
checked before anything is unpacked.`,
		Example: `  banger kernel pull
  banger kernel pull debian-cloud`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := api.KernelPull{}
			if len(args) == 1 {
				p.Name = args[0]
			}
			k, err := callWithProgress(cmd.Context(), a, api.MethodKernelPull, p)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "kernel %s: %s (boots under %s)\n", k.Name, k.Release, model.JoinVMMs(k.VMMs, ", "))
			return nil
		},
	}
}

func newKernelImportCommand(a *app) *cobra.Command {
	var modules string
	cmd := &cobra.Command{
		Use:   "import NAME PATH",
		Short: "Import a local kernel (vmlinux or bzImage), with an optional modules tree",
		Example: `  banger kernel import custom ./vmlinux
  banger kernel import debian-local /boot/vmlinuz-6.1.0-18-cloud-amd64 --modules /lib/modules/6.1.0-18-cloud-amd64`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := absPath(args[1])
			if err != nil {
				return err
			}
			if modules != "" {
				if modules, err = absPath(modules); err != nil {
					return err
				}
			}
			k, err := callWithProgress(cmd.Context(), a, api.MethodKernelImport, api.KernelImport{Name: args[0], Path: path, Modules: modules})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "kernel %s imported (boots under %s)\n", k.Name, model.JoinVMMs(k.VMMs, ", "))
			return nil
		},
	}
	cmd.Flags().StringVar(&modules, "modules", "", "the kernel's lib/modules/<release> directory")
	return cmd
}

func newKernelLsCommand(a *app) *cobra.Command {
	var asJSON bool
	var format string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List kernels and which VMMs can boot each",
		Example: `  banger kernel ls
  banger kernel ls --json
  banger kernel ls --format '{{.Name}} {{.Release}}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := call(cmd.Context(), a, api.MethodKernelList, api.Empty{})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			if format != "" {
				t, err := parseFormat(format)
				if err != nil {
					return err
				}
				return printFormatted(cmd.OutOrStdout(), t, res.Kernels)
			}
			rows := [][]string{}
			for _, k := range res.Kernels {
				vmms := model.JoinVMMs(k.VMMs, ",")
				if len(k.VMMs) == 1 && k.VMMs[0] == model.VMMQEMU {
					vmms += " (qemu only)"
				}
				rows = append(rows, []string{k.Name, k.Release, vmms, k.Source})
			}
			return table(cmd.OutOrStdout(), []string{"NAME", "RELEASE", "VMMS", "SOURCE"}, rows)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&format, "format", "", formatFlagHelp)
	return cmd
}

func newKernelInspectCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:               "inspect NAME",
		ValidArgsFunction: a.completeNames("kernel"),
		Short:             "Show a kernel's files, hash and VMMs",
		Example:           `  banger kernel inspect debian-cloud --json`,
		Args:              cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := call(cmd.Context(), a, api.MethodKernelGet, api.ArtifactRef{Name: args[0]})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), k)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "name:     %s\nrelease:  %s\nsource:   %s\nsha256:   %s\nvmlinuz:  %s\nvmlinux:  %s\nmodules:  %s\nvmms:     %s\n",
				k.Name, k.Release, k.Source, k.SHA256, k.Path, k.VMLinux, k.ModulesDir, model.JoinVMMs(k.VMMs, ", "))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newKernelRmCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:               "rm NAME...",
		ValidArgsFunction: a.completeNames("kernel"),
		Short:             "Remove kernels (refused while a VM uses one)",
		Example:           `  banger kernel rm custom`,
		Args:              cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachVM(args, func(n string) error {
				if _, err := call(cmd.Context(), a, api.MethodKernelRemove, api.ArtifactRef{Name: n}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "kernel %s removed\n", n)
				return nil
			})
		},
	}
	return cmd
}
