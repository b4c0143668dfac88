package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
)

func newVMSuspendCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "suspend NAME...",
		Short: "Save running VMs' memory and device state to disk and end their VMM",
		Long: `Suspend saves each VM's memory and device state into its directory
(checksummed) and ends its VMM process, freeing its memory. The VM keeps its
identity: banger vm resume (or vm start) brings it back with the same
boot_id, processes and open connections, its clock stepped to the host's.
A suspended VM survives daemon restarts. If saving fails (disk full, a
device that cannot migrate) the VM keeps running and nothing is saved.
banger vm stop --force discards the saved state.`,
		Example: `  banger vm suspend dev
  banger vm resume dev`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeVMNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachVM(args, func(n string) error {
				vm, err := callWithProgress(cmd.Context(), a, api.MethodVMSuspend, api.VMRef{Name: n})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", vm.Name, vm.State)
				return nil
			})
		},
	}
}

func newVMResumeCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "resume NAME...",
		Short: "Resume suspended VMs from their saved state (same boot_id)",
		Long: `Resume checks a suspended VM's saved state against its recorded size and
SHA-256, refusing a truncated or corrupt file (the VM then stays suspended),
re-creates its network attachment if the host lost it, restores the VMM
from the state and waits until the guest agent answers with the same
boot_id. The guest's clock is stepped to the host's.`,
		Example: `  banger vm resume dev
  banger vm start dev   # the same for a suspended VM`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeVMNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachVM(args, func(n string) error {
				vm, err := callWithProgress(cmd.Context(), a, api.MethodVMResume, api.VMRef{Name: n})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s running (boot_id %s)\n", vm.Name, vm.BootID)
				return nil
			})
		},
	}
}
