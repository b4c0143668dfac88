package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
)

func newDaemonStatusCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the daemon's pid, version, uptime, socket and store schema",
		Example: `  banger daemon status
  banger daemon status --json | jq .schema_version`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := a.paths()
			if err != nil {
				return err
			}
			st, err := rpc.Invoke(cmd.Context(), rpc.NewClient(p.Socket()), api.MethodDaemonStatus, api.Empty{})
			if err != nil {
				if errors.Is(err, rpc.ErrNotRunning) {
					return fmt.Errorf("daemon is not running (socket %s): start it with `banger daemon start`", p.Socket())
				}
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), st)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "pid:            %d\n", st.PID)
			fmt.Fprintf(w, "version:        %s (commit %s)\n", st.Build.Version, st.Build.Commit)
			fmt.Fprintf(w, "uptime:         %s\n", humanDuration(secs(st.UptimeSeconds)))
			fmt.Fprintf(w, "socket:         %s\n", st.Socket)
			fmt.Fprintf(w, "state dir:      %s\n", st.Home)
			fmt.Fprintf(w, "store:          %s (schema %d)\n", st.Store, st.SchemaVersion)
			if st.Helper.Reachable {
				fmt.Fprintf(w, "root helper:    pid %d, %s (%s)\n", st.Helper.PID, st.Helper.Version, st.Helper.Socket)
			} else {
				fmt.Fprintf(w, "root helper:    unreachable: %s\n", st.Helper.Error)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
