// Command banger-helper is banger's privileged root helper: the only
// process banger runs as root. It is a binary of its own so that root
// links only what the helper needs (netlink, nftables, DNS, image build),
// never the owner daemon's store, VMM SDKs or registry clients; its import
// graph is pinned by deps_test.go against testdata/deps.txt.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"

	"github.com/bangerdev/banger/internal/buildinfo"
	"github.com/bangerdev/banger/internal/cmdmain"
	"github.com/bangerdev/banger/internal/detach"
	"github.com/bangerdev/banger/internal/hostnat"
	"github.com/bangerdev/banger/internal/jailer"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/roothelper"
)

func main() {
	cmdmain.EnsureSbinOnPath()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("banger-helper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		showVersion = fs.Bool("version", false, "print the version and exit")
		managed     = fs.Bool("managed", false, "spawned by a development daemon, which may stop it")
		ownerUID    = fs.Int("owner-uid", -1, "the uid allowed besides root (required)")
		socket      = fs.String("socket", "", "socket path (default: the owner's runtime dir)")
		subnet      = fs.String("subnet", "", "guest subnet CIDR (default 10.213.77.0/24)")
		bridge      = fs.String("bridge", "", "bridge device (default banger0)")
		stateDir    = fs.String("state-dir", "", "root-only state directory (default /run/banger)")
		readyFD     = fs.Int("ready-fd", 0, "write \"ready\" to this descriptor once serving")
		jail        = jailer.Default()
		debug       = fs.Bool("debug", false, "log debug detail")
		// --root-helper is what units written by earlier releases pass to
		// bangerd, which now execs this binary with its arguments.
		_ = fs.Bool("root-helper", false, "ignored (accepted from units written by earlier releases)")
	)
	fs.StringVar(&jail.FirecrackerBinary, "firecracker-binary", jail.FirecrackerBinary, "firecracker, the exec file the jailer copies into each jail (root-owned)")
	fs.StringVar(&jail.JailerBinary, "jailer-binary", jail.JailerBinary, "Firecracker's jailer, run as root (root-owned)")
	fs.IntVar(&jail.UIDStart, "jailer-uid-start", jail.UIDStart, "first uid/gid of the range jailed VMs run as (one each)")
	fs.IntVar(&jail.UIDCount, "jailer-uid-count", jail.UIDCount, "size of the jail uid range")
	fs.StringVar(&jail.CgroupVersion, "jailer-cgroup-version", jail.CgroupVersion, "cgroup version the jailer uses (1 or 2)")
	fs.StringVar(&jail.ChrootBase, "jailer-chroot-base", jail.ChrootBase, "root-owned directory of the jails, on the filesystem of the owner's VM dirs")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `banger-helper: banger's privileged root helper (runs as root).

Usage:
  banger-helper --owner-uid UID [--socket PATH] [--subnet CIDR] [--bridge NAME]
  banger-helper --version

Normally started by bangerd-root.service, by banger's supervisor, or by a
development daemon running as root.

Flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := cmdmain.Parse(fs, args); !ok {
		return code
	}
	if *showVersion {
		fmt.Fprintf(stdout, "banger-helper %s\n", buildinfo.Get())
		return cmdmain.ExitOK
	}
	if err := jail.Validate(); err != nil {
		fmt.Fprintf(stderr, "banger-helper: %v\n", err)
		return 2
	}
	if *ownerUID < 0 {
		fmt.Fprintln(stderr, "banger-helper: needs --owner-uid UID (the user whose daemon may call it)")
		return cmdmain.ExitUsage
	}
	logger := cmdmain.Logger(stderr, *debug)
	ctx, stop := cmdmain.SignalContext(context.Background())
	defer stop()

	sock := *socket
	if sock == "" {
		p, err := paths.FromEnv()
		if err != nil {
			fmt.Fprintf(stderr, "banger-helper: %v\n", err)
			return 1
		}
		sock = p.HelperSocket()
	}
	netCfg := hostnat.Config{Bridge: *bridge, StateDir: *stateDir}
	if netCfg.StateDir == "" {
		netCfg.StateDir = paths.SystemFromEnv(os.Getenv).RunDir()
	}
	if *subnet != "" {
		p, err := netip.ParsePrefix(*subnet)
		if err != nil {
			fmt.Fprintf(stderr, "banger-helper: --subnet %q: %v\n", *subnet, err)
			return 2
		}
		netCfg.Subnet = p
	}
	err := roothelper.Run(ctx, roothelper.Options{
		Socket: sock, OwnerUID: *ownerUID, Managed: *managed, NetworkConfig: netCfg, Jailer: jail,
		Logger: logger.With("component", "root-helper"),
		Ready:  func() { detach.SignalReady(*readyFD) },
	})
	if err != nil {
		fmt.Fprintf(stderr, "banger-helper: %v\n", err)
		return 1
	}
	return 0
}
