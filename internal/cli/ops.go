package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
)

func newOpsCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "ops",
		Short:   "In-flight daemon operations",
		Example: `  banger ops ls`,
		Args:    cobra.ArbitraryArgs,
		RunE:    groupRunE,
	}
	cmd.AddCommand(newOpsLsCommand(a))
	return cmd
}

func newOpsLsCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List operations the daemon is running now",
		Long: `List the daemon's in-flight operations: op_id, method, target, age,
current stage and progress. An operation leaves the list when it ends.`,
		Example: `  banger ops ls
  banger ops ls --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			res, err := rpc.Invoke(cmd.Context(), c, api.MethodOperationsList, api.Empty{})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			now := time.Now()
			rows := make([][]string, 0, len(res.Operations))
			for _, op := range res.Operations {
				prog := ""
				if op.Total > 0 {
					prog = fmt.Sprintf("%d/%d %s", op.Done, op.Total, op.Unit)
				}
				rows = append(rows, []string{op.OpID, op.Method, op.Target, ago(now, op.StartedAt), op.Stage, prog})
			}
			return table(cmd.OutOrStdout(), []string{"OP_ID", "METHOD", "TARGET", "AGE", "STAGE", "PROGRESS"}, rows)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func secs(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
