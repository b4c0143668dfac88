package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/termsafe"
)

func newVMSessionsCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "sessions NAME",
		Short: "List the commands run in a VM through banger vm exec",
		Long: `List the guest sessions recorded for a VM: every banger vm exec command with
its op_id, start, end and exit code. An exit code of -1 means the agent
channel broke before the command reported its exit.

Detached sessions (vm exec --detach) are listed first when the VM runs: the
guest agent keeps them, running and finished, with their id for banger vm
attach, state and exit code (the last 32 at most).`,
		Example: `  banger vm sessions dev
  banger vm sessions dev --json | jq '.sessions[] | select(.exit_code != 0)'`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVMNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := call(cmd.Context(), a, api.MethodVMSessions, api.VMRef{Name: args[0]})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			if err := detachedTable(cmd.OutOrStdout(), res); err != nil {
				return err
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

// detachedTable prints the agent's sessions (the guest's word: escaped).
func detachedTable(w io.Writer, res api.SessionList) error {
	if len(res.Detached) == 0 {
		if res.DetachedError != "" {
			fmt.Fprintf(w, "detached sessions: unavailable (%s)\n\n", termsafe.Line(res.DetachedError))
		}
		return nil
	}
	rows := make([][]string, 0, len(res.Detached))
	for _, s := range res.Detached {
		exit := "-"
		if s.ExitCode != nil {
			exit = fmt.Sprint(*s.ExitCode)
		}
		mode := "pipes"
		if s.TTY {
			mode = "tty"
		}
		rows = append(rows, []string{s.ID, s.StartedAt.Local().Format(time.DateTime), termsafe.Line(s.State), exit, mode,
			fmt.Sprint(s.Clients), termsafe.Line(strings.Join(s.Command, " "))})
	}
	if err := table(w, []string{"SESSION", "STARTED", "STATE", "EXIT", "MODE", "CLIENTS", "COMMAND"}, rows); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w)
	return err
}
