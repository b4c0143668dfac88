package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
)

func newVMCreateCommand(a *app) *cobra.Command {
	var f createFlags
	var start, asJSON bool
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a VM (disk, config, address) without starting it",
		Example: `  banger vm create --name dev
  banger vm create --name big --cpus 2 --memory 4G --disk-size 20G --start
  banger vm create --name dev --mount ~/src/app:/app --mount ~/data:/data:ro`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := f.params()
			if err != nil {
				return err
			}
			if err := a.workspacePlan(cmd.Context(), &f, &p); err != nil {
				return err
			}
			p.Start = start
			vm, err := callWithProgress(cmd.Context(), a, api.MethodVMCreate, p)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), vm)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s (%s)\n", vm.Name, vm.State)
			return nil
		},
	}
	f.add(cmd)
	f.addPublish(a, cmd)
	cmd.Flags().BoolVar(&start, "start", false, "start the VM and wait until it is ready")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the VM as JSON")
	return cmd
}
