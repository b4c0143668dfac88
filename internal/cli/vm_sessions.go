package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
)

func newVMSessionsCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "sessions NAME",
		Short: "List the commands run in a VM through banger vm exec",
		Long: `List the guest sessions recorded for a VM: every banger vm exec command with
its op_id, start, end and exit code. An exit code of -1 means the agent
channel broke before the command reported its exit.`,
		Example: `  banger vm sessions dev
  banger vm sessions dev --json | jq '.sessions[] | select(.exit_code != 0)'`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVMNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			var res api.SessionList
			if err := a.call(cmd.Context(), api.MethodVMSessions, api.VMRef{Name: args[0]}, &res); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			rows := make([][]string, 0, len(res.Sessions))
			for _, s := range res.Sessions {
				dur, exit := "-", "running"
				if s.EndedAt != nil {
					dur = humanDuration(s.EndedAt.Sub(s.StartedAt))
				}
				if s.ExitCode != nil {
					exit = fmt.Sprint(*s.ExitCode)
				}
				rows = append(rows, []string{s.OpID, s.StartedAt.Local().Format(time.DateTime), dur, exit, strings.Join(s.Command, " ")})
			}
			return table(cmd.OutOrStdout(), []string{"OP", "STARTED", "DURATION", "EXIT", "COMMAND"}, rows)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
