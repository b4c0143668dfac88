package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
)

func newTemplateCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "template",
		Short: "Make templates: provisioned, quiesced snapshots that vm run restores instead of booting",
		Example: `  banger template create dev --image debian-bookworm --run 'apt-get install -y make'
  banger vm run --template dev -- make test
  banger snapshot ls          # templates are listed with kind template`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(newTemplateCreateCommand(a))
	return cmd
}

func newTemplateCreateCommand(a *app) *cobra.Command {
	var f createFlags
	var run string
	cmd := &cobra.Command{
		Use:   "create NAME --image IMG [--cpus N] [--memory M] [--run 'CMD']",
		Short: "Boot a VM from an image, provision it, and keep it as a template",
		Long: `Template create boots a VM from the image, runs the --run command in it
(sh -c, through the agent; a non-zero exit makes no template), syncs and
freezes its filesystems, snapshots its memory, devices and disk as the
template, and removes the VM. banger vm run --template NAME restores new
VMs from it, each with its own identity; banger vm run without --from or
--template uses a template made from the same image, kernel and size
when one exists (and says so on stderr), unless --cold is given.
Templates are listed and removed with banger snapshot ls|rm.`,
		Example: `  banger template create base --image debian-bookworm --memory 1G
  banger template create web --image debian-bookworm --run 'apt-get install -y nginx'
  banger vm run --template web -- curl -s localhost`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := f.params()
			if err != nil {
				return err
			}
			req := api.TemplateCreate{Name: args[0], Image: p.Image, Kernel: p.Kernel, VMM: p.VMM, CPUs: p.CPUs,
				MemoryMiB: p.MemoryMiB, DiskBytes: p.DiskBytes, Network: p.Network, Run: run}
			sn, err := callWithProgress(cmd.Context(), a, api.MethodTemplateCreate, req)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "template %s from image %s (%d cpus, %s memory, %s state)\n",
				sn.Name, sn.Image, sn.CPUs, bytesHuman(int64(sn.MemoryMiB)<<20), bytesHuman(sn.StateBytes))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.image, "image", "", "image to boot (default debian-bookworm)")
	fl.StringVar(&f.kernel, "kernel", "", "kernel to boot (default debian-cloud)")
	fl.StringVar(&f.vmm, "vmm", "auto", "VMM driver: auto, qemu or firecracker")
	fl.IntVar(&f.cpus, "cpus", 0, "virtual CPUs (default 2, at most the host's)")
	fl.StringVar(&f.memory, "memory", "", "memory, e.g. 1024 (MiB), 512M or 2G (default 1G)")
	fl.StringVar(&f.disk, "disk-size", "", "root disk size, e.g. 4G (default: the image's size, at least 2G)")
	fl.StringVar(&f.network, "network", "isolated", "isolated or shared (the template's VMs keep it)")
	fl.StringVar(&run, "run", "", "provisioning command, run with sh -c in the VM before it is captured")
	return cmd
}
