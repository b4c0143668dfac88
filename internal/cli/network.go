package cli

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
)

// newSystemNetworkCommand is "banger system network": the host side of the
// guest network, owned by the root helper.
func newSystemNetworkCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "network",
		Short: "Show or tear down banger's host network (bridge, taps, NAT, DNS)",
		Long: `banger's host network is made by the root helper when the first VM starts:
the bridge, one tap per VM, IP forwarding, a banger-owned nftables table for
NAT, and the VM DNS server on the bridge address. "status" shows what exists;
"down" removes all of it (the next VM start makes it again).`,
		Example: `  banger system network status
  banger system network down`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(newNetworkStatusCommand(a), newNetworkDownCommand(a))
	return cmd
}

func newNetworkDownCommand(a *app) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Remove the bridge, every banger tap, the NAT table and the DNS server",
		Long: `Remove banger's whole host network. Refused while VMs are running (it names
them) unless --force, which cuts those VMs off the network.`,
		Example: `  banger system network down
  banger system network down --force`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			if err := c.Call(cmd.Context(), api.MethodNetworkDown, api.NetworkDown{Force: force}, nil); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "host network is down")
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "tear down even under running VMs")
	return cmd
}

func newNetworkStatusCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the bridge, taps, NAT rules, forwarding and DNS server",
		Example: `  banger system network status
  banger system network status --json | jq .network.taps`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			var st api.NetworkStatus
			if err := c.Call(cmd.Context(), api.MethodNetworkState, nil, &st); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), st)
			}
			writeNetworkStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func writeNetworkStatus(w io.Writer, st api.NetworkStatus) {
	n := st.Network
	fmt.Fprintf(w, "config:      bridge %s, subnet %s, gateway %s, nft table %s\n", n.Config.Bridge, n.Config.Subnet, n.Config.Gateway, n.Config.Table)
	if b := n.Bridge; b != nil {
		state := "down"
		if b.Up {
			state = "up"
		}
		fmt.Fprintf(w, "bridge:      %s %s %s\n", b.Name, state, strings.Join(b.Addrs, " "))
	} else {
		fmt.Fprintln(w, "bridge:      absent (made when a VM starts)")
	}
	fmt.Fprintf(w, "forwarding:  %v\n", n.Forwarding)
	if n.Chains == nil {
		fmt.Fprintln(w, "nft table:   absent")
	} else {
		names := make([]string, 0, len(n.Chains))
		for c := range n.Chains {
			names = append(names, c)
		}
		sort.Strings(names)
		parts := make([]string, 0, len(names))
		for _, c := range names {
			parts = append(parts, fmt.Sprintf("%s %d", c, n.Chains[c]))
		}
		fmt.Fprintf(w, "nft table:   %s (rules: %s)\n", n.Config.Table, strings.Join(parts, ", "))
	}
	fmt.Fprintf(w, "taps:        %d\n", len(n.Taps))
	for _, t := range n.Taps {
		state := "down"
		if t.Up {
			state = "up"
		}
		master := t.Master
		if master == "" {
			master = "(detached)"
		}
		fmt.Fprintf(w, "  %-16s %-4s on %s, owner uid %d\n", t.Name, state, master, t.OwnerUID)
	}
	switch d := st.DNS; {
	case d == nil:
		fmt.Fprintln(w, "dns:         unknown (no table pushed yet)")
	case d.Serving:
		fmt.Fprintf(w, "dns:         serving .%s on %s (%d names)\n", d.Domain, d.Addr, d.Names)
	default:
		fmt.Fprintf(w, "dns:         not serving: %s (%d names known)\n", d.Error, d.Names)
	}
}
