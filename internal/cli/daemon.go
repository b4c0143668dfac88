package cli

import "github.com/spf13/cobra"

func newDaemonCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Start, stop and inspect bangerd, the owner daemon",
		Example: `  banger daemon start
  banger daemon status --json
  banger daemon socket
  banger daemon stop`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(newDaemonStartCommand(a), newDaemonStopCommand(a), newDaemonStatusCommand(a), newDaemonSocketCommand(a))
	return cmd
}
