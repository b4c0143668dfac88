// Command bangerd is banger's owner daemon. With --check-migrations it
// checks the store schema without changing anything (the updater's
// pre-swap check). --root-helper is deprecated: the privileged helper is
// banger-helper, a binary of its own; bangerd --root-helper execs it so
// units written by the previous release keep working for one release.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/bangerdev/banger/internal/buildinfo"
	"github.com/bangerdev/banger/internal/cmdmain"
	"github.com/bangerdev/banger/internal/daemon"
	"github.com/bangerdev/banger/internal/detach"
	"github.com/bangerdev/banger/internal/installmeta"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/virtiofs"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == virtiofs.SandboxArg {
		// The owner daemon re-runs itself as virtiofsd's wrapper.
		os.Exit(virtiofs.SandboxMain(os.Args[2:]))
	}
	cmdmain.EnsureSbinOnPath()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if slices.Contains(args, "--root-helper") || slices.Contains(args, "-root-helper") {
		return execHelper(args, stderr)
	}
	fs := flag.NewFlagSet("bangerd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		showVersion     = fs.Bool("version", false, "print the version and exit")
		checkMigrations = fs.Bool("check-migrations", false, "check that the store can be migrated to this binary's schema; change nothing")
		system          = fs.Bool("system", false, "with --check-migrations: check the system-install store")
		readyFD         = fs.Int("ready-fd", 0, "write \"ready\" to this descriptor once serving")
		debug           = fs.Bool("debug", false, "log debug detail")
		testMethods     = fs.Bool("enable-test-methods", false, "register test-only methods")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `bangerd: banger's owner daemon.

Usage:
  bangerd [--debug]                         serve the owner API (normally started by banger daemon start)
  bangerd --root-helper --owner-uid UID     deprecated: runs banger-helper with these flags
  bangerd --check-migrations [--system]     check the store schema, change nothing
  bangerd --version

Examples:
  bangerd --check-migrations
  sudo bangerd --check-migrations --system

Flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := cmdmain.Parse(fs, args); !ok {
		return code
	}
	if *showVersion {
		fmt.Fprintf(stdout, "bangerd %s\n", buildinfo.Get())
		return cmdmain.ExitOK
	}
	logger := cmdmain.Logger(stderr, *debug)
	ctx, stop := cmdmain.SignalContext(context.Background())
	defer stop()

	switch {
	case *checkMigrations:
		return runCheckMigrations(ctx, *system, stdout, stderr)
	default:
		p, err := paths.FromEnv()
		if err != nil {
			fmt.Fprintf(stderr, "bangerd: %v\n", err)
			return 1
		}
		exe, _ := os.Executable()
		err = daemon.Run(ctx, daemon.Options{
			Paths: p, Logger: logger, Executable: exe, Debug: *debug,
			EnableTestMethods: *testMethods,
			Ready:             func() { detach.SignalReady(*readyFD) },
		})
		if err != nil {
			fmt.Fprintf(stderr, "bangerd: %v\n", err)
			return 1
		}
		return 0
	}
}

func runCheckMigrations(ctx context.Context, system bool, stdout, stderr io.Writer) int {
	var p paths.User
	if system {
		sys := paths.SystemFromEnv(os.Getenv)
		p = sys.User()
		// The store lives in the owner's state, which the owner can
		// change under us (symlinks to root's files): root reads it as
		// the owner, never as itself.
		if err := dropToOwner(sys); err != nil {
			fmt.Fprintf(stderr, "bangerd: check migrations: %v\n", err)
			return 1
		}
	} else {
		var err error
		if p, err = paths.FromEnv(); err != nil {
			fmt.Fprintf(stderr, "bangerd: %v\n", err)
			return 1
		}
	}
	res, err := store.Check(ctx, p.StoreFile())
	if err != nil {
		fmt.Fprintf(stderr, "bangerd: check migrations: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, res.String())
	if !res.WouldSucceed {
		return 1
	}
	return 0
}

// dropToOwner makes a root process the system install's owner (groups,
// gid, then uid, on every thread). Without an install there is no owner
// and nothing to drop to; a non-root process stays as it is.
func dropToOwner(sys paths.System) error {
	if os.Geteuid() != 0 {
		return nil
	}
	meta, err := installmeta.Read(sys.InstallMeta())
	if errors.Is(err, installmeta.ErrNotInstalled) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the install's owner: %w", err)
	}
	if meta.OwnerUID <= 0 || meta.OwnerGID < 0 {
		return fmt.Errorf("install.toml names owner uid %d gid %d: not an unprivileged user", meta.OwnerUID, meta.OwnerGID)
	}
	if err := syscall.Setgroups([]int{meta.OwnerGID}); err != nil {
		return fmt.Errorf("drop to owner %s: set groups: %w", meta.OwnerUser, err)
	}
	if err := syscall.Setgid(meta.OwnerGID); err != nil {
		return fmt.Errorf("drop to owner %s: set gid: %w", meta.OwnerUser, err)
	}
	if err := syscall.Setuid(meta.OwnerUID); err != nil {
		return fmt.Errorf("drop to owner %s: set uid: %w", meta.OwnerUser, err)
	}
	return nil
}

// execHelper replaces this process with banger-helper (beside this binary,
// else the installed one): the deprecated `bangerd --root-helper` of units
// written by the previous release then runs the small root binary.
func execHelper(args []string, stderr io.Writer) int {
	var cands []string
	if exe, err := os.Executable(); err == nil {
		cands = append(cands, filepath.Join(filepath.Dir(exe), helperName))
	}
	cands = append(cands, paths.SystemFromEnv(os.Getenv).HelperBin())
	for _, c := range cands {
		if st, err := os.Stat(c); err != nil || !st.Mode().IsRegular() {
			continue
		}
		fmt.Fprintf(stderr, "bangerd: --root-helper is deprecated: running %s (reinstall with sudo banger system install to start it directly)\n", c)
		err := syscall.Exec(c, append([]string{helperName}, args...), os.Environ())
		fmt.Fprintf(stderr, "bangerd: exec %s: %v\n", c, err)
		return 1
	}
	fmt.Fprintf(stderr, "bangerd: --root-helper: %s not found in %v (reinstall with sudo banger system install)\n", helperName, cands)
	return 1
}

const helperName = "banger-helper"
