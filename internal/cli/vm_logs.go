package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
)

func newVMLogsCommand(a *app) *cobra.Command {
	var follow bool
	var lines int
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print a VM's serial console (boot messages, init errors)",
		Example: `  banger vm logs dev
  banger vm logs -f --lines 50 dev`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVMNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			s, err := c.Open(cmd.Context(), api.MethodVMLogs, api.VMLogs{Name: args[0], Follow: follow, Lines: lines})
			if err != nil {
				return err
			}
			defer s.Close()
			for {
				f, err := s.Next()
				if err != nil {
					if cmd.Context().Err() != nil {
						return nil // Ctrl-C ends -f
					}
					return err
				}
				switch f.Type {
				case rpc.FrameData:
					var b []byte
					if err := json.Unmarshal(f.Payload, &b); err != nil {
						return fmt.Errorf("decode console data: %w", err)
					}
					cmd.OutOrStdout().Write(b)
				case rpc.FrameResult:
					return nil
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing as the guest writes")
	cmd.Flags().IntVarP(&lines, "lines", "n", 0, "start with only the last N lines")
	return cmd
}
