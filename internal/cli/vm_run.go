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
	var from, template string
	var cold bool
	cmd := &cobra.Command{
		Use:   "run [flags] [-- COMMAND [ARG...]]",
		Short: "Create and start a VM; with a command, run it there and exit with its code",
		Long: `Create a VM, start it and wait until its guest agent answers. With a
command after --, run it in the guest through the agent, stream its output,
and exit with its exit code. With --rm the VM is removed afterwards.
-i streams stdin and -t gives the command a terminal (like docker run -it);
-it without a command opens root's login shell.
With --from SNAP the VM is restored from a snapshot or template (banger vm
fork) with its own identity instead of booting; its size, image and kernel
are the snapshot's. --template NAME does the same from a template. Without
either, a template made from the same image, kernel, size, init mode,
network and policy is used when one exists (said on stderr); --cold boots
afresh regardless.`,
		Example: `  banger vm run --name dev
  banger vm run --rm -- uname -a
  banger vm run -it --rm -- bash
  banger vm run --rm --memory 2G -- sh -c 'echo hello from $(hostname)'
  banger vm run --rm --from base -- make test   # restored from a snapshot: about a second
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
			if from == "" && template == "" {
				if err := a.workspacePlan(ctx, &f, &p); err != nil {
					return err
				}
			}
			if from, err = a.runSource(cmd, from, template, cold, p); err != nil {
				return err
			}
			if from != "" {
				if vm, err = a.runFrom(cmd, from, p); err != nil {
					return err
				}
			} else if vm, err = callWithProgress(ctx, a, api.MethodVMCreate, p); err != nil {
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
				if _, err := call(rctx, a, api.MethodVMRemove, api.VMRemove{Name: vm.Name, Force: true}); err != nil {
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
	cmd.Flags().StringVar(&from, "from", "", "restore the VM from this snapshot or template instead of booting it (see banger vm fork)")
	cmd.Flags().StringVar(&template, "template", "", "restore the VM from this template (banger template create)")
	cmd.Flags().BoolVar(&cold, "cold", false, "boot afresh even when a matching template exists")
	_ = cmd.RegisterFlagCompletionFunc("from", a.completeNames("snapshot"))
	_ = cmd.RegisterFlagCompletionFunc("template", a.completeNames("snapshot"))
	return cmd
}

// runFrom forks one VM from a snapshot for vm run. Sizes, image and kernel
// are the snapshot's: asking for others is a usage error, not ignored.
func (a *app) runFrom(cmd *cobra.Command, from string, p api.VMCreate) (model.VM, error) {
	explicit := cmd.Flags().Changed("from") || cmd.Flags().Changed("template")
	for _, fl := range []string{"image", "cpus", "memory", "disk-size", "init", "network", "deny-egress", "deny-private", "forward-deny"} {
		if explicit && cmd.Flags().Changed(fl) {
			return model.VM{}, &UsageError{Err: fmt.Errorf("--%s cannot be combined with --from: a VM restored from a snapshot has the snapshot's shape (banger snapshot inspect %s)", fl, from)}
		}
	}
	req := api.VMFork{From: from, Name: p.Name, Count: 1}
	if explicit && cmd.Flags().Changed("vmm") {
		req.VMM = p.VMM
	}
	if explicit && cmd.Flags().Changed("kernel") {
		req.Kernel = p.Kernel
	}
	res, err := callWithProgress(cmd.Context(), a, api.MethodVMFork, req)
	if err != nil {
		return model.VM{}, err
	}
	if len(res.VMs) != 1 {
		return model.VM{}, fmt.Errorf("vm fork from %s made %d vms, want 1", from, len(res.VMs))
	}
	return res.VMs[0], nil
}

// runSource picks what vm run restores from: --from, --template, or a
// template matching the run's shape (unless --cold); "" boots afresh.
func (a *app) runSource(cmd *cobra.Command, from, template string, cold bool, p api.VMCreate) (string, error) {
	switch {
	case from != "" && template != "":
		return "", &UsageError{Err: fmt.Errorf("--from and --template both name what to restore: give one")}
	case cold && (from != "" || template != ""):
		return "", &UsageError{Err: fmt.Errorf("--cold boots afresh: it cannot be combined with --from or --template")}
	case (from != "" || template != "") && (p.Publish.All || len(p.Publish.Ports) > 0):
		return "", &UsageError{Err: fmt.Errorf("--publish-all and -p cannot be combined with --from or --template yet: publish on a cold boot (--cold) or forward by hand (banger vm forward)")}
	case from != "":
		return from, nil
	case template != "":
		sn, err := call(cmd.Context(), a, api.MethodSnapshotGet, api.SnapshotRef{Name: template})
		if err != nil {
			return "", err
		}
		if sn.Kind != model.SnapshotKindTemplate {
			return "", &UsageError{Err: fmt.Errorf("%s is a %s, not a template: use --from %s", template, sn.Kind, template)}
		}
		return template, nil
	case cold:
		return "", nil
	case p.Publish.All || len(p.Publish.Ports) > 0:
		// A restored VM does not take published ports yet: boot afresh.
		return "", nil
	}
	m, err := call(cmd.Context(), a, api.MethodTemplateMatch, api.TemplateMatch{Image: p.Image, Kernel: p.Kernel, VMM: p.VMM,
		CPUs: p.CPUs, MemoryMiB: p.MemoryMiB, DiskBytes: p.DiskBytes, InitMode: p.InitMode, Network: p.Network, Policy: p.Policy})
	if err != nil {
		return "", err
	}
	if m.Template != "" {
		fmt.Fprintf(a.env.Stderr, "using template %s (same image, kernel and size); --cold boots afresh\n", m.Template)
	}
	return m.Template, nil
}
