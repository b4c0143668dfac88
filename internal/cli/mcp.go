package cli

import (
	"io"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/buildinfo"
	"github.com/bangerdev/banger/internal/mcpserver"
)

func newMCPCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "mcp",
		Short: "Serve the Model Context Protocol over stdio, for editors and agents",
		Long: `Serve the Model Context Protocol (MCP) on stdin/stdout so an MCP client
(an editor, an agent framework) can drive banger: vm_run (cold, or restored
from a snapshot or template), vm_create, vm_exec, vm_write_file,
vm_read_file, vm_ports, vm_forward, vm_list, vm_remove, vm_suspend,
vm_resume, vm_snapshot, vm_fork, snapshot_list, and each VM's console as the resource
banger://vm/NAME/console. The client starts this command itself; see
docs/mcp.md for how to register it.

Requests from here are marked as coming from MCP, and the daemon holds them
to config.toml's [mcp] limits (max_vms, max_memory, allow_network,
default_timeout), whatever the client asks. Logs go to stderr; stdout
carries only the protocol.`,
		Example: `  banger mcp    # started by the MCP client, not by hand`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			s := mcpserver.New(mcpserver.Config{Client: c, Log: a.log, Version: buildinfo.Get().Version})
			t := &mcp.IOTransport{Reader: io.NopCloser(a.env.Stdin), Writer: nopWriteCloser{a.env.Stdout}}
			return s.Run(ctx, t)
		},
	}
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
