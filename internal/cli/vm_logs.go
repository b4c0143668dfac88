package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/termsafe"
)

func newVMLogsCommand(a *app) *cobra.Command {
	var follow, raw bool
	var lines int
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print a VM's serial console (boot messages, init errors)",
		Long: `Print a VM's serial console. Anything in the guest may write there, so
control characters a terminal would act on (escape sequences that set the
clipboard, retitle the window or redraw the screen) are shown as visible
escapes such as \x1b, and CRLF line ends as plain newlines. --raw writes the
console's bytes unchanged.`,
		Example: `  banger vm logs dev
  banger vm logs -f --lines 50 dev
  banger vm logs --raw dev > console.bin`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVMNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			s, err := rpc.OpenStream(cmd.Context(), c, api.MethodVMLogs, api.VMLogs{Name: args[0], Follow: follow, Lines: lines})
			if err != nil {
				return err
			}
			defer s.Close()
			// Escaped whether or not stdout is a terminal: a file or a pipe
			// into less -R reaches one later, and --raw is the explicit way
			// to get the bytes.
			out := cmd.OutOrStdout()
			if !raw {
				tw := termsafe.NewWriter(out)
				defer tw.Flush()
				out = tw
			}
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
					if _, err := out.Write(b); err != nil {
						return fmt.Errorf("write console output: %w", err)
					}
				case rpc.FrameResult:
					return nil
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing as the guest writes")
	cmd.Flags().BoolVar(&raw, "raw", false, "write the console's bytes unchanged, control characters included")
	cmd.Flags().IntVarP(&lines, "lines", "n", 0, "start with only the last N lines")
	return cmd
}
