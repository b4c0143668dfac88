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
	var rm, interactive, tty bool
	cmd := &cobra.Command{
		Use:   "run [flags] [-- COMMAND [ARG...]]",
		Short: "Create and start a VM; with a command, run it there and exit with its code",
		Long: `Create a VM, start it and wait until its guest agent answers. With a
command after --, run it in the guest through the agent, stream its output,
and exit with its exit code. With --rm the VM is removed afterwards.
-i streams stdin and -t gives the command a terminal (like docker run -it);
-it without a command opens root's login shell.`,
		Example: `  banger vm run --name dev
  banger vm run --rm -- uname -a
  banger vm run -it --rm -- bash
  banger vm run --rm --memory 2G -- sh -c 'echo hello from $(hostname)'`,
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
			stopAnnounce := func() {}
			if p.Publish.All || len(p.Publish.Ports) > 0 {
				stopAnnounce = a.announcePublished(ctx, vm.Name)
			}
			var runErr error
			switch {
			case len(args) > 0:
				o := execOptions{argv: args, stdin: interactive, tty: tty}
				if t := a.env.Getenv("TERM"); tty && t != "" {
					o.env = []string{"TERM=" + t}
				}
				runErr = a.execIn(ctx, vm.Name, o)
			case tty:
				runErr = a.shellIn(ctx, vm.Name)
			}
			stopAnnounce()
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
	f.addPublish(a, cmd)
	cmd.Flags().BoolVar(&rm, "rm", false, "remove the VM when the command ends")
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "stream stdin to the command")
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "give the command a terminal (without a command: a login shell)")
	return cmd
}
