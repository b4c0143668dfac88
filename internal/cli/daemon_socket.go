package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newDaemonSocketCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "socket",
		Short:   "Print the daemon's socket path",
		Example: `  banger daemon socket`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := a.paths()
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), p.Socket())
			return nil
		},
	}
}
