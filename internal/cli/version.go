package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/buildinfo"
	"github.com/bangerdev/banger/internal/rpc"
)

func newVersionCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print banger's version, and the running daemon's",
		Example: `  banger version
  banger version --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := struct {
				Client buildinfo.Info  `json:"client"`
				Daemon *buildinfo.Info `json:"daemon,omitempty"`
			}{Client: buildinfo.Get()}
			// The daemon's version only if it already runs: version never starts it.
			if p, err := a.paths(); err == nil {
				ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
				if st, err := rpc.Invoke(ctx, rpc.NewClient(p.Socket()), api.MethodDaemonStatus, api.Empty{}); err == nil {
					out.Daemon = &st.Build
				}
				cancel()
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "banger %s\n", out.Client)
			if out.Daemon != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "bangerd %s (running)\n", *out.Daemon)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
