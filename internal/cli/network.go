package cli

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
)

// newSystemNetworkCommand is "banger system network": the host side of the
// guest network, owned by the root helper.
func newSystemNetworkCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "network",
		Short: "Show or tear down banger's host network (bridge, taps, NAT, DNS)",
		Long: `banger's host network is made by the root helper when the first VM starts:
the bridge (IPv6 off), one tap per VM, IP forwarding, banger-owned nftables
tables (inet: NAT and forwarding; bridge: each VM may only use its own MAC
and address, and isolated VMs reach only the host), and the VM DNS server on
the bridge address. Nothing is made before a VM needs it. "status" shows
what exists and what banger changed; "down" removes all of it and puts
net.ipv4.ip_forward back to its value before banger (the next VM start
makes it again).`,
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
			if _, err := rpc.Invoke(cmd.Context(), c, api.MethodNetworkDown, api.NetworkDown{Force: force}); err != nil {
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
			st, err := rpc.Invoke(cmd.Context(), c, api.MethodNetworkState, api.Empty{})
			if err != nil {
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
		ipv6 := "ipv6 off"
		if !b.IPv6Disabled {
			ipv6 = "IPV6 ON (guests could send router advertisements)"
		}
		fmt.Fprintf(w, "bridge:      %s %s %s, %s\n", b.Name, state, strings.Join(b.Addrs, " "), ipv6)
	} else {
		fmt.Fprintln(w, "bridge:      absent (made when a VM starts)")
	}
	switch {
	case n.ForwardingWas != "":
		fmt.Fprintf(w, "forwarding:  %v (banger turned it on; was %s, restored by `banger system network down`)\n", n.Forwarding, n.ForwardingWas)
	default:
		fmt.Fprintf(w, "forwarding:  %v (not changed by banger)\n", n.Forwarding)
	}
	writeChains(w, "nft inet:    ", n.Config.Table, n.Chains)
	writeChains(w, "nft bridge:  ", n.Config.Table, n.BridgeChains)
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
		mode := "shared"
		if t.Isolated {
			mode = "isolated"
		}
		guard := fmt.Sprintf("%d source rules", t.SourceRules)
		if t.SourceRules == 0 {
			guard = "NO SOURCE RULES (drops everything)"
		}
		fmt.Fprintf(w, "  %-16s %-4s on %s, owner uid %d, %s, %s\n", t.Name, state, master, t.OwnerUID, mode, guard)
	}
	if len(n.Changes) == 0 {
		fmt.Fprintln(w, "changed:     nothing on this host (the first VM start sets the network up)")
	} else {
		fmt.Fprintln(w, "changed:")
		for _, c := range n.Changes {
			fmt.Fprintf(w, "  %s\n", c)
		}
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

// writeChains prints one nftables table's chains with their rule counts.
func writeChains(w io.Writer, label, table string, chains map[string]int) {
	if chains == nil {
		fmt.Fprintln(w, label+"absent")
		return
	}
	names := make([]string, 0, len(chains))
	for c := range chains {
		names = append(names, c)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, c := range names {
		parts = append(parts, fmt.Sprintf("%s %d", c, chains[c]))
	}
	fmt.Fprintf(w, "%s%s (rules: %s)\n", label, table, strings.Join(parts, ", "))
}
