package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
)

// eachVM runs fn for every named VM, joining the errors so one failure does
// not hide the others.
func eachVM(names []string, fn func(name string) error) error {
	var errs []error
	for _, n := range names {
		if err := fn(n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func newVMStartCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "start NAME...",
		Short:             "Start stopped VMs (or resume suspended ones) and wait until they are ready",
		Example:           `  banger vm start dev`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeVMNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachVM(args, func(n string) error {
				vm, err := callWithProgress(cmd.Context(), a, api.MethodVMStart, api.VMRef{Name: n})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s running (boot_id %s)\n", vm.Name, vm.BootID)
				return nil
			})
		},
	}
}

func newVMStopCommand(a *app) *cobra.Command {
	var force bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "stop NAME...",
		Short: "Stop VMs: the guest powers off cleanly, or is killed with --force",
		Example: `  banger vm stop dev
  banger vm stop --force --timeout 5s dev other`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeVMNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachVM(args, func(n string) error {
				vm, err := call(cmd.Context(), a, api.MethodVMStop, api.VMStop{Name: n, Force: force, TimeoutSeconds: int(timeout.Seconds())})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", vm.Name, vm.State)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "kill the VMM at once instead of a clean power-off; for a suspended VM, discard its saved state")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long a clean power-off may take before it is forced")
	return cmd
}

func newVMRestartCommand(a *app) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:               "restart NAME...",
		Short:             "Stop and start VMs (a new boot_id)",
		Example:           `  banger vm restart dev`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeVMNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachVM(args, func(n string) error {
				vm, err := callWithProgress(cmd.Context(), a, api.MethodVMRestart, api.VMStop{Name: n, TimeoutSeconds: int(timeout.Seconds())})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s running (boot_id %s)\n", vm.Name, vm.BootID)
				return nil
			})
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long a clean power-off may take before it is forced")
	return cmd
}

func newVMRmCommand(a *app) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove VMs and everything they hold (disk, address, sockets)",
		Example: `  banger vm rm dev
  banger vm rm -f dev   # even if it runs`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeVMNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachVM(args, func(n string) error {
				if _, err := call(cmd.Context(), a, api.MethodVMRemove, api.VMRemove{Name: n, Force: force}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s removed\n", n)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "stop a running VM first")
	return cmd
}

func newVMInspectCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show everything about a VM",
		Example: `  banger vm inspect dev
  banger vm inspect dev --json | jq .boot_id`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVMNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			vm, err := call(cmd.Context(), a, api.MethodVMGet, api.VMRef{Name: args[0]})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), vm)
			}
			w := cmd.OutOrStdout()
			state := string(vm.State)
			if vm.StateReason != "" {
				state += " (" + vm.StateReason + ")"
			}
			for _, kv := range [][2]string{
				{"name", vm.Name}, {"id", vm.ID}, {"state", state}, {"image", vm.Image}, {"kernel", vm.Kernel},
				{"vmm", string(vm.VMM)}, {"cpus", fmt.Sprint(vm.CPUs)}, {"memory", fmt.Sprintf("%d MiB", vm.MemoryMiB)},
				{"disk", bytesHuman(vm.DiskBytes)}, {"init", string(vm.InitMode)}, {"network", vm.Network}, {"boot_id", vm.BootID},
				{"ip", vm.IP}, {"mac", vm.MAC}, {"tap", vm.Tap}, {"pid", fmt.Sprint(vm.PID)}, {"dir", vm.Dir},
				{"created", vm.CreatedAt.Format(time.RFC3339)},
			} {
				if kv[1] != "" && kv[1] != "0" {
					fmt.Fprintf(w, "%-9s %s\n", kv[0]+":", kv[1])
				}
			}
			printPublished(w, vm)
			printMounts(w, vm)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// completeVMNames offers VM names for shell completion.
func (a *app) completeVMNames(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	return a.completeNames("vm")(cmd, args, toComplete)
}
