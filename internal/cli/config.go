package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/config"
)

// loadConfig reads the owner's config.toml (defaults when it is absent).
func (a *app) loadConfig() (config.Config, string, error) {
	p, err := a.paths()
	if err != nil {
		return config.Config{}, "", err
	}
	path := p.ConfigFile()
	cfg, err := config.Load(path)
	return cfg, path, err
}

func newConfigCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show banger's settings (config.toml)",
		Long: `banger reads optional settings from config.toml in its config directory
($BANGER_HOME/config/config.toml, or ~/.config/banger/config.toml). Every key
is optional; unknown keys are an error. The daemon reads the file when it
starts: restart it (banger daemon stop && banger daemon start) after a change.

  vmm = "auto"                  # default VMM for new VMs: auto, qemu, firecracker
  [network]
  subnet = "10.213.77.0/24"     # guest address pool (the bridge takes the first address)
  bridge = "banger0"            # bridge device, must start with "banger"
  [dns]
  domain = "banger"             # VMs resolve as NAME.<domain>
  [debian]
  mirror = ""                   # Debian archive URL; "" uses the host's apt sources
  [copy]                        # bounds on what vm cp accepts from a guest (0 = default)
  max_bytes = 68719476736       # total file bytes of one copy out of a VM (64 GiB)
  max_entries = 1000000         # files, directories and links of one copy out
  [policy]                      # defaults for new VMs; create flags add to them
  deny_egress = []              # IPv4 CIDRs the host drops for VM traffic (169.254.0.0/16 always)
  deny_private = false          # also drop 10/8, 172.16/12, 192.168/16, 100.64/10 (not the VM subnet)
  forward_deny = []             # guest ports vm forward refuses
  [sessions]
  replay_bytes = 1048576        # output a detached session keeps for vm attach (at most 16 MiB)
  [firecracker]                 # the jailer, run by the root helper (root's settings decide)
  binary = "/usr/local/bin/firecracker"     # root-owned; copied into each jail
  jailer_binary = "/usr/local/bin/jailer"   # root-owned; run as root
  uid_start = 1900000000        # each jailed VM runs as its own uid/gid from this range
  uid_count = 1024              # (no user or group of the host may have one of them)
  cgroup_version = "2"          # the host's cgroup version ("1" on hybrid hosts)
  chroot_base = "/var/lib/banger/jailer"    # root-owned, on the filesystem of the VM dirs`,
		Example: `  banger config show
  banger config show --json`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(newConfigShowCommand(a))
	return cmd
}

func newConfigShowCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Print the effective settings (the file over the defaults)",
		Example: `  banger config show
  banger config show --json | jq -r .network.subnet`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, path, err := a.loadConfig()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), cfg)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "# %s\n", path)
			fmt.Fprintf(w, "vmm = %q\n\n[network]\nsubnet = %q\nbridge = %q\n\n[dns]\ndomain = %q\n\n[debian]\nmirror = %q\n\n[copy]\nmax_bytes = %d\nmax_entries = %d\n\n[policy]\ndeny_egress = %s\ndeny_private = %t\nforward_deny = %s\n",
				cfg.VMM, cfg.Network.Subnet, cfg.Network.Bridge, cfg.DNS.Domain, cfg.Debian.Mirror, cfg.Copy.MaxBytes, cfg.Copy.MaxEntries,
				tomlStrings(cfg.Policy.DenyEgress), cfg.Policy.DenyPrivate, tomlInts(cfg.Policy.ForwardDeny))
			fmt.Fprintf(w, "\n[mcp]\nmax_vms = %d\nmax_memory = %d\nallow_network = %t\ndefault_timeout = %q\n",
				cfg.MCP.MaxVMs, cfg.MCP.MaxMemory, cfg.MCP.AllowNetwork, cfg.MCP.DefaultTimeout)
			fmt.Fprintf(w, "\n[sessions]\nreplay_bytes = %d\n", cfg.Sessions.ReplayBytes)
			fc := cfg.Firecracker
			fmt.Fprintf(w, "\n[firecracker]\nbinary = %q\njailer_binary = %q\nuid_start = %d\nuid_count = %d\ncgroup_version = %q\nchroot_base = %q\n",
				fc.FirecrackerBinary, fc.JailerBinary, fc.UIDStart, fc.UIDCount, fc.CgroupVersion, fc.ChrootBase)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func tomlStrings(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func tomlInts(ns []int) string {
	q := make([]string, len(ns))
	for i, n := range ns {
		q[i] = strconv.Itoa(n)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
