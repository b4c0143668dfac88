package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/buildinfo"
	"github.com/bangerdev/banger/internal/hostnat"
	"github.com/bangerdev/banger/internal/installmeta"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/sysinstall"
	"github.com/bangerdev/banger/internal/updater"
)

// errSystemNeedsRoot is returned by system install/uninstall run without root.
var errSystemNeedsRoot = errors.New("must run as root (sudo)")

func newSystemCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "system",
		Short: "Install or remove banger system-wide (root helper and owner daemon as services)",
		Long: `Install banger system-wide: the four binaries under /usr/local, the owner
named in /etc/banger/install.toml, the owner daemon's state in
/var/lib/banger/home, and the systemd units bangerd.service (owner daemon) and
bangerd-root.service (root helper). Where systemd runs the host the units are
enabled and started; elsewhere the same layout runs under banger's own
supervisor (banger daemon start). BANGER_SYSTEM_ROOT prefixes every path.`,
		Example: `  sudo banger system install --owner alice
  sudo banger system uninstall`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(newSystemInstallCommand(a), newSystemUninstallCommand(a), newSystemNetworkCommand(a))
	return cmd
}

func newSystemInstallCommand(a *app) *cobra.Command {
	var owner string
	var network sysinstall.Network
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install this banger system-wide for an owner user and start its services",
		Long: `Copy this banger, the bangerd beside it and banger-vsock-agent to
/usr/local/bin and /usr/local/lib/banger, write /etc/banger/install.toml and
the systemd units, then start the root helper and the owner daemon: with
systemctl where systemd is PID 1, else with banger's supervisor. Running it
again refreshes the install and restarts the services; running VMs survive.
The owner defaults to the user who ran sudo.

--subnet and --bridge set the root helper's host network (recorded in
install.toml and passed to the helper); a reinstall without them keeps the
recorded values. Set the same values as network.subnet and network.bridge in
the owner's config.toml. The root helper's jailer flags (--firecracker-binary,
--jailer-*) come from the [firecracker] section of root's config.toml.`,
		Example: `  sudo banger system install
  sudo banger system install --owner alice
  sudo banger system install --owner alice --subnet 10.50.0.0/24 --bridge banger1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// Bad values are refused before anything else, so nothing is installed.
			if err := network.Validate(); err != nil {
				return &UsageError{Err: fmt.Errorf("banger system install: --subnet/--bridge: %w", err)}
			}
			if os.Geteuid() != 0 {
				return fmt.Errorf("banger system install %w: sudo banger system install --owner USER", errSystemNeedsRoot)
			}
			if owner == "" {
				owner = a.env.Getenv("SUDO_USER")
			}
			if owner == "" || owner == "root" {
				return &UsageError{Err: errors.New("name the owner of the install: banger system install --owner USER (not root)")}
			}
			o, err := sysinstall.LookupOwner(owner)
			if err != nil {
				return err
			}
			// Root's [firecracker] settings become the helper's --jailer-* flags.
			cfg, cfgPath, err := a.loadConfig()
			if err != nil {
				return fmt.Errorf("banger system install: read root's config %s: %w", cfgPath, err)
			}
			src, err := a.installSources()
			if err != nil {
				return err
			}
			sys := paths.SystemFromEnv(a.env.Getenv)
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "installing banger %s for %s (uid %d) under %s\n", buildinfo.Version, o.User, o.UID, sys.Root)
			res, err := sysinstall.Install(cmd.Context(), sysinstall.Options{
				Owner: o, Source: src, System: sys, Network: network, Jailer: cfg.Firecracker,
				Version: buildinfo.Version, Commit: buildinfo.Commit, BuiltAt: buildinfo.BuiltAt,
				Logger: a.log,
			})
			for _, f := range res.Files {
				fmt.Fprintf(w, "  wrote %s\n", f)
			}
			if err != nil {
				return err
			}
			if res.UnitsEnabled {
				// Type=simple units are "started" once forked: wait until the
				// daemon serves, so the next banger command finds it.
				svc := updater.SystemdServices{Probe: daemonProbe(sys.User().Socket())}
				if err := svc.WaitDaemonReady(cmd.Context()); err != nil {
					return fmt.Errorf("banger system install: %w (see journalctl -u %s)", err, updater.DaemonUnit)
				}
				fmt.Fprintf(w, "enabled and started %s and %s\ndaemon running (%s)\n", updater.HelperUnit, updater.DaemonUnit, sys.User().Socket())
				return nil
			}
			meta, err := installmeta.Read(sys.InstallMeta())
			if err != nil {
				return err
			}
			// No systemd: (re)start through the supervisor, so a reinstall
			// runs the binaries just copied.
			fmt.Fprintln(w, "systemd is not running this host: starting the services with banger's supervisor")
			sup := a.newSupervisor(sys, meta)
			ctx := cmd.Context()
			if err := sup.RestartHelper(ctx); err != nil {
				return err
			}
			if err := sup.RestartDaemon(ctx); err != nil {
				return err
			}
			if err := sup.WaitDaemonReady(ctx); err != nil {
				return err
			}
			fmt.Fprintf(w, "root helper running (pid %d)\ndaemon running (pid %d, %s)\n", sup.HelperPID(), sup.DaemonPID(), sys.User().Socket())
			fmt.Fprintf(w, "after a reboot: sudo banger daemon start\n")
			return nil
		},
	}
	cmd.Flags().StringVar(&owner, "owner", "", "user whose daemon the install runs (default: $SUDO_USER)")
	cmd.Flags().StringVar(&network.Subnet, "subnet", "", "root helper's guest subnet CIDR (default: kept, else 10.213.77.0/24)")
	cmd.Flags().StringVar(&network.Bridge, "bridge", "", "root helper's bridge device, banger* (default: kept, else banger0)")
	return cmd
}

// installSources finds the four binaries to install: this banger, and
// bangerd, banger-vsock-agent and banger-helper beside it
// ($BANGER_DAEMON_BIN, $BANGER_AGENT_BIN and $BANGER_HELPER_BIN override;
// the helper is also looked for beside bangerd).
func (a *app) installSources() (sysinstall.Binaries, error) {
	if a.env.Executable == "" {
		return sysinstall.Binaries{}, errors.New("cannot tell where this banger binary is")
	}
	bangerd, err := a.bangerdPath()
	if err != nil {
		return sysinstall.Binaries{}, err
	}
	agent := a.env.Getenv("BANGER_AGENT_BIN")
	if agent == "" {
		agent = filepath.Join(filepath.Dir(a.env.Executable), updater.AgentName)
	}
	if _, err := os.Stat(agent); err != nil {
		return sysinstall.Binaries{}, fmt.Errorf("find %s beside %s: %w", updater.AgentName, a.env.Executable, err)
	}
	helper := a.env.Getenv("BANGER_HELPER_BIN")
	if helper == "" {
		helper = filepath.Join(filepath.Dir(a.env.Executable), updater.HelperName)
		if _, err := os.Stat(helper); err != nil {
			helper = filepath.Join(filepath.Dir(bangerd), updater.HelperName)
		}
	}
	if _, err := os.Stat(helper); err != nil {
		return sysinstall.Binaries{}, fmt.Errorf("find %s beside %s: %w", updater.HelperName, a.env.Executable, err)
	}
	return sysinstall.Binaries{Banger: a.env.Executable, Bangerd: bangerd, Agent: agent, Helper: helper}, nil
}

// teardownHostNetwork removes the root helper's host network, if anything
// of it is there, and restores ip_forward to what it was before banger.
func teardownHostNetwork(ctx context.Context, w io.Writer, sys paths.System, meta installmeta.Meta) error {
	cfg := hostnat.Config{Bridge: meta.NetworkBridge, StateDir: sys.RunDir()}
	if meta.NetworkSubnet != "" {
		p, err := netip.ParsePrefix(meta.NetworkSubnet)
		if err != nil {
			return fmt.Errorf("host network: install.toml subnet %q: %w", meta.NetworkSubnet, err)
		}
		cfg.Subnet = p
	}
	n, err := hostnat.New(cfg)
	if err != nil {
		return fmt.Errorf("host network: %w", err)
	}
	st, err := n.State(ctx)
	if err != nil {
		return fmt.Errorf("host network: %w", err)
	}
	changes := st.Changes()
	if len(changes) == 0 {
		return nil
	}
	if err := n.Teardown(ctx); err != nil {
		return fmt.Errorf("tear down host network: %w", err)
	}
	fmt.Fprintf(w, "undid banger's host network changes: %s\n", strings.Join(changes, "; "))
	return nil
}

func newSystemUninstallCommand(a *app) *cobra.Command {
	var purge bool
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop the services and remove the system install (state kept unless --purge)",
		Long: `Stop the owner daemon and the root helper, then remove the units, the
binaries (and any .previous backups), install.toml and the update staging
area, and undo the root helper's host network (bridge, taps, nftables
tables; net.ipv4.ip_forward back to its value before banger). The owner
daemon's state (VMs, images, kernels, store) stays unless --purge. Running
VMs are not stopped, but lose their network.`,
		Example: `  sudo banger system uninstall
  sudo banger system uninstall --purge`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if os.Geteuid() != 0 {
				return fmt.Errorf("banger system uninstall %w", errSystemNeedsRoot)
			}
			sys := paths.SystemFromEnv(a.env.Getenv)
			w := cmd.OutOrStdout()
			systemd := sysinstall.SystemdRunning()
			var errs []error
			if !systemd {
				meta, err := installmeta.Read(sys.InstallMeta())
				switch {
				case errors.Is(err, installmeta.ErrNotInstalled):
					fmt.Fprintf(w, "banger is not installed under %s\n", sys.Root)
				case err != nil:
					errs = append(errs, err)
				default:
					sup := a.newSupervisor(sys, meta)
					if err := sup.Stop(cmd.Context()); err != nil {
						errs = append(errs, err)
					} else {
						fmt.Fprintln(w, "stopped the daemon and the root helper")
						_ = os.Remove(sup.RunDir()) // only when empty
					}
				}
			}
			// Read before Uninstall removes it: which bridge the helper used.
			meta, _ := installmeta.Read(sys.InstallMeta())
			if err := sysinstall.Uninstall(cmd.Context(), sysinstall.UninstallOptions{System: sys, PurgeState: purge}); err != nil {
				errs = append(errs, err)
			}
			// With the helper stopped, undo what it changed on the host
			// network (bridge, taps, tables) and put ip_forward back.
			if err := teardownHostNetwork(cmd.Context(), w, sys, meta); err != nil {
				errs = append(errs, err)
			}
			if err := errors.Join(errs...); err != nil {
				return err
			}
			fmt.Fprintf(w, "removed the system install under %s\n", sys.Root)
			if !purge {
				fmt.Fprintf(w, "kept the owner's state in %s (remove it with --purge)\n", sys.Home())
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&purge, "purge", false, "also delete the owner daemon's state (VMs, images, kernels, store)")
	return cmd
}
