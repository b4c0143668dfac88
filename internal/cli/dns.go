package cli

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/guestnet"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/vmdns"
)

func newDNSCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dns",
		Short: "Resolve NAME.banger on this host",
		Long: `VMs answer as NAME.banger (the domain is dns.domain in config.toml) through
banger's DNS server on the bridge address, which the root helper runs while
the network is up. Guests use it already; "banger dns setup" makes the host's
systemd-resolved send the domain to it too.`,
		Example: `  banger dns setup
  sudo banger dns setup --apply`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(newDNSSetupCommand(a))
	return cmd
}

func newDNSSetupCommand(a *app) *cobra.Command {
	var apply bool
	cmd := &cobra.Command{
		Use:   "setup",
		Short: "Print (or with --apply write) the systemd-resolved drop-in for VM names",
		Long: `Print the systemd-resolved drop-in that routes the VM domain (and only it)
to banger's DNS server on the bridge address. With --apply (root) write it to
/etc/systemd/resolved.conf.d/banger.conf; then restart systemd-resolved to
pick it up. The domain and address follow config.toml (dns.domain,
network.subnet). BANGER_SYSTEM_ROOT prefixes the path.`,
		Example: `  banger dns setup
  sudo banger dns setup --apply && sudo systemctl restart systemd-resolved`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, err := a.loadConfig()
			if err != nil {
				return err
			}
			subnet, err := cfg.Subnet()
			if err != nil {
				return err
			}
			plan, err := guestnet.NewPlan(subnet)
			if err != nil {
				return err
			}
			server := netip.AddrPortFrom(plan.Gateway, 53)
			w := cmd.OutOrStdout()
			if !apply {
				text, err := vmdns.ResolvedDropIn(cfg.DNS.Domain, server)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "# /%s\n%s", vmdns.DropInPath, text)
				return nil
			}
			if os.Geteuid() != 0 {
				return errors.New("banger dns setup --apply must run as root: sudo banger dns setup --apply")
			}
			root := paths.SystemFromEnv(a.env.Getenv).Root
			changed, err := vmdns.ApplyDropIn(root, cfg.DNS.Domain, server)
			if err != nil {
				return err
			}
			path := filepath.Join(root, vmdns.DropInPath)
			if !changed {
				fmt.Fprintf(w, "%s is already up to date\n", path)
				return nil
			}
			fmt.Fprintf(w, "wrote %s: .%s names go to %s\n", path, cfg.DNS.Domain, plan.Gateway)
			fmt.Fprintln(w, "now run: sudo systemctl restart systemd-resolved")
			return nil
		},
	}
	cmd.Flags().BoolVar(&apply, "apply", false, "write the drop-in (root)")
	return cmd
}
