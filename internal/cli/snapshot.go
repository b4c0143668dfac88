package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
)

func newVMSnapshotCommand(a *app) *cobra.Command {
	var as string
	var stop bool
	cmd := &cobra.Command{
		Use:   "snapshot NAME [--as SNAP] [--stop]",
		Short: "Capture a running VM's memory, device state and root disk as a snapshot",
		Long: `Snapshot syncs and freezes the guest's root filesystem through the agent,
pauses the VM, saves its memory and device state (checksummed) and copies
its root disk (a reflink where the filesystem has them, else a sparse
copy), then lets the VM continue, or ends it with --stop. New VMs are made
from the snapshot with banger vm fork SNAP or banger vm run --from SNAP,
each with its own MAC, address, name, machine-id and SSH host keys.
If anything fails the VM keeps running and nothing is saved.`,
		Example: `  banger vm snapshot dev --as dev-clean
  banger vm fork dev-clean --count 3
  banger vm snapshot dev --stop`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVMNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			sn, err := callWithProgress(cmd.Context(), a, api.MethodVMSnapshot, api.VMSnapshot{Name: args[0], As: as, Stop: stop})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "snapshot %s of vm %s (%s state, sha256 %s)\n", sn.Name, sn.SourceVM, bytesHuman(sn.StateBytes), short(sn.StateSHA))
			return nil
		},
	}
	cmd.Flags().StringVar(&as, "as", "", "the snapshot's name (default NAME-YYYYMMDD-HHMMSS)")
	cmd.Flags().BoolVar(&stop, "stop", false, "end the VM once it is captured")
	return cmd
}

func newSnapshotCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "List, inspect and remove VM snapshots and templates",
		Example: `  banger vm snapshot dev --as base
  banger snapshot ls
  banger snapshot inspect base --json
  banger snapshot rm base`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(newSnapshotLsCommand(a), newSnapshotInspectCommand(a), newSnapshotRmCommand(a))
	return cmd
}

func newSnapshotLsCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List snapshots and templates",
		Example: `  banger snapshot ls
  banger snapshot ls --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := call(cmd.Context(), a, api.MethodSnapshotList, api.Empty{})
			if err != nil {
				return err
			}
			if res == nil {
				res = []model.Snapshot{}
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			now := time.Now()
			rows := [][]string{}
			for _, sn := range res {
				rows = append(rows, []string{sn.Name, sn.Kind, sn.SourceVM, sn.Image, sn.Kernel, string(sn.VMM),
					strconv.Itoa(sn.CPUs), bytesHuman(int64(sn.MemoryMiB) << 20), bytesHuman(sn.StateBytes + sn.DiskAlloc),
					strconv.Itoa(len(sn.Users)), ago(now, sn.CreatedAt)})
			}
			return table(cmd.OutOrStdout(), []string{"NAME", "KIND", "FROM VM", "IMAGE", "KERNEL", "VMM", "CPUS", "MEMORY", "ON DISK", "FORKS", "AGE"}, rows)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newSnapshotInspectCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:               "inspect NAME",
		Short:             "Show a snapshot's source, image, kernel, sizes, checksum and forked VMs",
		Example:           `  banger snapshot inspect base --json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeNames("snapshot"),
		RunE: func(cmd *cobra.Command, args []string) error {
			sn, err := call(cmd.Context(), a, api.MethodSnapshotGet, api.SnapshotRef{Name: args[0]})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), sn)
			}
			users := strings.Join(sn.Users, ", ")
			if users == "" {
				users = "-"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "name:      %s\nkind:      %s\nfrom vm:   %s\nimage:     %s\nkernel:    %s\nvmm:       %s\ncpus:      %d\nmemory:    %s\ndisk:      %s (%s on disk)\nstate:     %s, sha256 %s\nforked:    %s\ndir:       %s\ncreated:   %s\n",
				sn.Name, sn.Kind, sn.SourceVM, sn.Image, sn.Kernel, sn.VMM, sn.CPUs, bytesHuman(int64(sn.MemoryMiB)<<20),
				bytesHuman(sn.DiskBytes), bytesHuman(sn.DiskAlloc), bytesHuman(sn.StateBytes), sn.StateSHA, users, sn.Dir, sn.CreatedAt.Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newSnapshotRmCommand(a *app) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm NAME...",
		Short: "Remove snapshots (refused while VMs forked from one exist, unless --force)",
		Example: `  banger snapshot rm base
  banger snapshot rm --force base   # the forked VMs keep their own disks`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeNames("snapshot"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachVM(args, func(n string) error {
				if _, err := call(cmd.Context(), a, api.MethodSnapshotRemove, api.SnapshotRemove{Name: n, Force: force}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "snapshot %s removed\n", n)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove even if VMs were forked from it")
	return cmd
}

// short cuts a digest for human output.
func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12]
	}
	return sum
}
