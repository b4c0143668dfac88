package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/termsafe"
)

func newVMPortsCommand(a *app) *cobra.Command {
	var asJSON, watch, all bool
	cmd := &cobra.Command{
		Use:   "ports NAME",
		Short: "List the TCP and UDP sockets listening in a VM",
		Long: `List the guest's listening TCP and UDP sockets with the process that owns
each, as the guest agent finds them in /proc. The VM's policy labels them:
loopback-only (bound to 127.0.0.0/8 or ::1: nothing reaches it over the
network, but vm forward does) and forward-denied (the VM was created with
--forward-deny for it). Banger's own guest agent is hidden; --all shows it
with the reason. -w keeps watching and prints the full list again whenever
it changes (with --json: one JSON object per line) until Ctrl-C.`,
		Example: `  banger vm ports dev
  banger vm ports dev --json | jq '.ports[] | select(.port == 8080)'
  banger vm ports -w dev`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVMNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			if !watch {
				res, err := call(cmd.Context(), a, api.MethodVMPorts, api.VMPorts{Name: args[0], All: all})
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(w, res)
				}
				return portsTable(w, res.Ports)
			}
			return a.watchPorts(cmd.Context(), api.VMPorts{Name: args[0], Watch: true, All: all}, w, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "keep printing the list whenever it changes")
	cmd.Flags().BoolVar(&all, "all", false, "also list what the VM's policy hides, with the reason")
	return cmd
}

func (a *app) watchPorts(ctx context.Context, req api.VMPorts, w io.Writer, asJSON bool) error {
	return watchStream(ctx, a, api.MethodVMPorts, req, func(f rpc.Frame) error {
		if f.Kind != api.KindPorts {
			return nil
		}
		var ports []api.Port
		if err := json.Unmarshal(f.Payload, &ports); err != nil {
			return fmt.Errorf("decode ports: %w", err)
		}
		if asJSON {
			b, err := json.Marshal(api.PortList{Ports: ports})
			if err != nil {
				return fmt.Errorf("encode ports: %w", err)
			}
			fmt.Fprintf(w, "%s\n", termsafe.JSON(b))
			return nil
		}
		fmt.Fprintf(w, "# %s\n", time.Now().Format(time.TimeOnly))
		if err := portsTable(w, ports); err != nil {
			return err
		}
		fmt.Fprintln(w)
		return nil
	})
}

func portsTable(w io.Writer, ports []api.Port) error {
	sort.SliceStable(ports, func(i, j int) bool {
		if ports[i].Port != ports[j].Port {
			return ports[i].Port < ports[j].Port
		}
		return ports[i].Proto < ports[j].Proto
	})
	rows := make([][]string, 0, len(ports))
	for _, p := range ports {
		pid, command := "-", p.Command
		if p.PID > 0 {
			pid = fmt.Sprint(p.PID)
		}
		if len(p.Cmdline) > 0 {
			command = strings.Join(p.Cmdline, " ")
		}
		// Every field but the numbers came from the guest: escaped, so a
		// process named after an escape sequence shows as text.
		notes := strings.Join(p.Labels, ",")
		if p.Hidden != "" {
			notes = strings.TrimPrefix(notes+",hidden: "+p.Hidden, ",")
		}
		if notes == "" {
			notes = "-"
		}
		rows = append(rows, []string{termsafe.Line(p.Proto), termsafe.Line(p.Address), fmt.Sprint(p.Port), pid, termsafe.Line(notes), termsafe.Line(command)})
	}
	return table(w, []string{"PROTO", "ADDRESS", "PORT", "PID", "POLICY", "COMMAND"}, rows)
}
