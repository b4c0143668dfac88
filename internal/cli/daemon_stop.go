package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/detach"
	"github.com/bangerdev/banger/internal/rpc"
)

func newDaemonStopCommand(a *app) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "stop",
		Short: "Ask the daemon to exit gracefully (running VMs keep running)",
		Long: `Ask bangerd to exit and wait until it has. VMs keep running: the next
daemon re-adopts them. Stopping a stopped daemon is a no-op.`,
		Example: `  banger daemon stop`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := a.paths()
			if err != nil {
				return err
			}
			c := rpc.NewClient(p.Socket())
			st, err := rpc.Invoke(cmd.Context(), c, api.MethodDaemonStatus, api.Empty{})
			if err != nil {
				if errors.Is(err, rpc.ErrNotRunning) {
					fmt.Fprintln(cmd.OutOrStdout(), "daemon is not running")
					return nil
				}
				return fmt.Errorf("reach daemon: %w", err)
			}
			if _, err := rpc.Invoke(cmd.Context(), c, api.MethodDaemonShutdown, api.Empty{}); err != nil {
				return fmt.Errorf("ask daemon (pid %d) to stop: %w", st.PID, err)
			}
			if !detach.WaitExit(st.PID, timeout) {
				return fmt.Errorf("daemon (pid %d) still running %s after the stop request; see %s", st.PID, timeout, p.DaemonLog())
			}
			fmt.Fprintf(cmd.OutOrStdout(), "daemon stopped (pid %d)\n", st.PID)
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the daemon to exit")
	return cmd
}
