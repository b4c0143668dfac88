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

func newDaemonStartCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "start",
		Short: "Start the daemon in the background (no-op when it runs)",
		Long: `Start bangerd detached from this terminal, in its own session, and wait
until it answers. Starting a running daemon is not an error.`,
		Example: `  banger daemon start
  BANGER_HOME=/tmp/b banger daemon start   # an isolated instance`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if handled, err := a.startSystemDaemon(cmd.Context(), cmd.OutOrStdout()); handled {
				return err
			}
			p, err := a.paths()
			if err != nil {
				return err
			}
			st, err := rpc.Invoke(cmd.Context(), rpc.NewClient(p.Socket()), api.MethodDaemonStatus, api.Empty{})
			if err != nil && !errors.Is(err, rpc.ErrNotRunning) {
				// A daemon that is dying (killed, its threads still exiting)
				// resets connections and still holds the state lock: wait
				// for it to be gone, then look again.
				if pid := detach.ReadPid(p.PidFile()); pid > 0 && detach.WaitExit(pid, 10*time.Second) {
					st, err = rpc.Invoke(cmd.Context(), rpc.NewClient(p.Socket()), api.MethodDaemonStatus, api.Empty{})
				}
			}
			if err == nil {
				fmt.Fprintf(cmd.OutOrStdout(), "daemon already running (pid %d, %s)\n", st.PID, p.Socket())
				return nil
			}
			if !errors.Is(err, rpc.ErrNotRunning) {
				return fmt.Errorf("check for a running daemon: %w", err)
			}
			pid, err := a.startDaemon(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "daemon started (pid %d, %s)\n", pid, p.Socket())
			return nil
		},
	}
}
