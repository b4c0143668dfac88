package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
)

func newVMRunCommand(a *app) *cobra.Command {
	var f createFlags
	var rm bool
	cmd := &cobra.Command{
		Use:   "run [flags] [-- COMMAND [ARG...]]",
		Short: "Create and start a VM; with a command, run it there and exit with its code",
		Long: `Create a VM, start it and wait until its guest agent answers. With a
command after --, run it in the guest through the agent, stream its output,
and exit with its exit code. With --rm the VM is removed afterwards.`,
		Example: `  banger vm run --name dev
  banger vm run --rm -- uname -a
  banger vm run --rm --memory 2G -- sh -c 'echo hello from $(hostname)'
  banger vm run --rm --workspace -- make test`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash > 0 || (dash < 0 && len(args) > 0) {
				return &UsageError{Err: fmt.Errorf("put the guest command after --: banger vm run [flags] -- %v", args)}
			}
			p, err := f.params()
			if err != nil {
				return err
			}
			p.Start = true
			ctx := cmd.Context()
			var vm model.VM
			if err := a.callWithProgress(ctx, api.MethodVMCreate, p, &vm); err != nil {
				return err
			}
			fmt.Fprintf(a.env.Stderr, "vm %s is running (boot_id %s)\n", vm.Name, vm.BootID)
			var runErr error
			if len(args) > 0 {
				runErr = a.execIn(ctx, vm.Name, execOptions{argv: args, stdin: false})
			}
			if rm {
				// Remove even when the command failed or was interrupted.
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
				defer cancel()
				if err := a.call(rctx, api.MethodVMRemove, api.VMRemove{Name: vm.Name, Force: true}, nil); err != nil {
					return fmt.Errorf("remove vm %s: %w", vm.Name, err)
				}
			}
			return runErr
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&rm, "rm", false, "remove the VM when the command ends")
	return cmd
}
