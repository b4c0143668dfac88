package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
)

func newVMForkCommand(a *app) *cobra.Command {
	var name string
	var count int
	cmd := &cobra.Command{
		Use:   "fork NAME|SNAP [--name N] [--count K]",
		Short: "Make running VMs from a snapshot (or from a running VM, snapshotted first)",
		Long: `Fork restores new VMs from a snapshot's memory and a copy of its disk:
they start where the snapshot was taken, in about a second. Each clone gets
its own identity before it is ready: its CRNG is reseeded with host
entropy, then it takes a new MAC, address, DNS name, host name,
/etc/machine-id and SSH host keys (pinned from the agent's answer). Given a
running VM instead of a snapshot, fork snapshots it first (the VM
continues). The snapshot's state is checked against its SHA-256 first: a
truncated or corrupt snapshot is refused and nothing is made. With
--count K and --name N the clones are N-1 … N-K. All or nothing: if one
clone fails, those made before it are removed.`,
		Example: `  banger vm fork dev --count 3
  banger vm fork base --name worker --count 4
  banger vm run --from base -- make test`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVMNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := callWithProgress(cmd.Context(), a, api.MethodVMFork, api.VMFork{From: args[0], Name: name, Count: count})
			if err != nil {
				return err
			}
			for _, vm := range res.VMs {
				fmt.Fprintf(cmd.OutOrStdout(), "%s running from snapshot %s (%s)\n", vm.Name, res.Snapshot.Name, vm.IP)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "the clone's name; with --count, the prefix of NAME-1, NAME-2, …")
	cmd.Flags().IntVar(&count, "count", 1, "how many clones to make")
	return cmd
}
