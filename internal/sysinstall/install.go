// Package sysinstall installs banger system-wide (`banger system install`):
// the four binaries under /usr/local, /etc/banger/install.toml naming the
// owner, the owner's state directory, and the two systemd units (the owner
// daemon and the root helper), enabled when systemd runs the host. Every
// path is under paths.System.Root, so tests install into a scratch root.
package sysinstall

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/hostnat"
	"github.com/bangerdev/banger/internal/installmeta"
	"github.com/bangerdev/banger/internal/jailer"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/system"
	"github.com/bangerdev/banger/internal/updater"
)

// ErrRootOwner reports an attempt to make root the owner: the owner daemon
// must run unprivileged, with the root helper as the only root process.
var ErrRootOwner = errors.New("the owner of a banger install must not be root")

// Owner is the user whose daemon the install runs.
type Owner struct {
	User string
	UID  int
	GID  int
	Home string // the user's home directory (from the passwd entry)
}

// LookupOwner resolves a user name (or numeric uid) to an Owner.
func LookupOwner(name string) (Owner, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var uerr error
		if u, uerr = user.LookupId(name); uerr != nil {
			return Owner{}, fmt.Errorf("look up owner %q: %w", name, err)
		}
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return Owner{}, fmt.Errorf("look up owner %q: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return Owner{}, fmt.Errorf("look up owner %q: gid %q: %w", name, u.Gid, err)
	}
	return Owner{User: u.Username, UID: uid, GID: gid, Home: u.HomeDir}, nil
}

// Network is the root helper's host network, recorded in install.toml and
// passed to the helper as --subnet and --bridge. Empty fields mean the
// helper's defaults (config.Default).
type Network struct {
	Subnet string // guest pool CIDR, e.g. 10.213.77.0/24
	Bridge string // bridge device, must start with "banger"
}

// Validate checks the set fields with the rules config.toml's network
// settings follow.
func (n Network) Validate() error {
	var errs []error
	if n.Subnet != "" {
		cfg := config.Default()
		cfg.Network.Subnet = n.Subnet
		if _, err := cfg.Subnet(); err != nil {
			errs = append(errs, err)
		}
	}
	if n.Bridge != "" {
		if err := hostnat.ValidateBridgeName(n.Bridge); err != nil {
			errs = append(errs, fmt.Errorf("network.bridge: %w", err))
		}
	}
	return errors.Join(errs...)
}

// helperMeta is what install.toml records of the helper's flags.
func helperMeta(n Network, j jailer.Config) installmeta.Meta {
	return installmeta.Meta{NetworkSubnet: n.Subnet, NetworkBridge: n.Bridge,
		FirecrackerBinary: j.FirecrackerBinary, JailerBinary: j.JailerBinary, JailerUIDStart: j.UIDStart,
		JailerUIDCount: j.UIDCount, JailerCgroupVersion: j.CgroupVersion, JailerChrootBase: j.ChrootBase}
}

// Binaries are the four banger programs to install.
type Binaries struct{ Banger, Bangerd, Agent, Helper string }

// Options configure Install.
type Options struct {
	Owner  Owner
	Source Binaries
	System paths.System
	// Network's empty fields keep the previous install's settings (so a
	// reinstall does not silently move the bridge), else the defaults.
	Network Network
	// Jailer is root's [firecracker] (config.toml): the helper's
	// --firecracker-binary and --jailer-* flags. Zero fields take the
	// defaults.
	Jailer jailer.Config
	// Build describes Source (normally the installing binary's buildinfo).
	Version, Commit, BuiltAt string
	IsSystemd                func() bool           // nil means SystemdRunning
	Run                      updater.CommandRunner // runs systemctl; nil means updater.ExecRunner
	Now                      func() time.Time      // nil means time.Now
	Logger                   *slog.Logger
}

// Result reports what Install did.
type Result struct {
	Files        []string // every file written
	UnitsEnabled bool     // systemd units enabled and (re)started
}

// SystemdRunning reports whether systemd is PID 1 (sd_booted's test).
func SystemdRunning() bool {
	st, err := os.Stat("/run/systemd/system")
	return err == nil && st.IsDir()
}

func (o *Options) defaults() {
	if o.IsSystemd == nil {
		o.IsSystemd = SystemdRunning
	}
	if o.Run == nil {
		o.Run = updater.ExecRunner
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Version == "" {
		o.Version = "unknown"
	}
	if o.Commit == "" {
		o.Commit = "unknown"
	}
	if o.BuiltAt == "" {
		o.BuiltAt = "unknown"
	}
}

// Install copies the binaries (0755), creates the owner's state directory,
// writes install.toml and the units, and enables and (re)starts the units
// when systemd is PID 1. Without systemd, `banger daemon start` runs the
// same layout. Installing again over an install refreshes everything.
func Install(ctx context.Context, opts Options) (Result, error) {
	opts.defaults()
	var res Result
	if opts.Owner.UID == 0 {
		return res, ErrRootOwner
	}
	if opts.Owner.Home == "" || !filepath.IsAbs(opts.Owner.Home) {
		return res, fmt.Errorf("install: owner home %q is not an absolute path", opts.Owner.Home)
	}
	sys := opts.System
	prev, prevErr := installmeta.Read(sys.InstallMeta())
	network := opts.Network
	if prevErr == nil {
		if network.Subnet == "" {
			network.Subnet = prev.NetworkSubnet
		}
		if network.Bridge == "" {
			network.Bridge = prev.NetworkBridge
		}
	}
	jail := opts.Jailer.WithDefaults()
	units, err := RenderUnits(sys, opts.Owner, network, jail)
	if err != nil {
		return res, fmt.Errorf("install: %w", err)
	}
	// Check every source before writing anything, so a bad source leaves
	// the host untouched.
	for _, src := range []string{opts.Source.Agent, opts.Source.Helper, opts.Source.Bangerd, opts.Source.Banger} {
		if st, err := os.Stat(src); err != nil || !st.Mode().IsRegular() {
			return res, fmt.Errorf("install: source binary %q is not a readable regular file", src)
		}
	}
	tg := updater.InstallTargets(sys)
	for _, b := range []struct{ src, dst string }{
		{opts.Source.Agent, tg.Agent},
		{opts.Source.Helper, tg.Helper},
		{opts.Source.Bangerd, tg.Bangerd},
		{opts.Source.Banger, tg.Banger},
	} {
		if err := system.CopyFileAtomic(b.src, b.dst, 0o755); err != nil {
			return res, fmt.Errorf("install: %w", err)
		}
		res.Files = append(res.Files, b.dst)
	}
	// One version's binaries are in place: an interrupted update's journal
	// no longer describes them and must not be replayed over them.
	if err := os.Remove(updater.JournalPath(sys.StagingDir())); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("install: discard the interrupted update's journal: %w", err)
	}
	if err := ensureOwnerState(sys, opts.Owner); err != nil {
		return res, fmt.Errorf("install: %w", err)
	}
	installedAt := opts.Now()
	if prevErr == nil && prev.OwnerUID == opts.Owner.UID {
		installedAt = prev.InstalledAt // a reinstall keeps the first install's date
	}
	meta := helperMeta(network, jail)
	meta.OwnerUser, meta.OwnerUID, meta.OwnerGID, meta.OwnerHome = opts.Owner.User, opts.Owner.UID, opts.Owner.GID, opts.Owner.Home
	meta.Version, meta.Commit, meta.BuiltAt, meta.InstalledAt = opts.Version, opts.Commit, opts.BuiltAt, installedAt
	if err := installmeta.Write(sys.InstallMeta(), meta); err != nil {
		return res, fmt.Errorf("install: %w", err)
	}
	res.Files = append(res.Files, sys.InstallMeta())
	for _, name := range []string{updater.HelperUnit, updater.DaemonUnit} {
		p := filepath.Join(sys.UnitDir(), name)
		if err := system.WriteFileAtomic(p, units[name], 0o644); err != nil {
			return res, fmt.Errorf("install: %w", err)
		}
		res.Files = append(res.Files, p)
	}
	if !opts.IsSystemd() {
		opts.Logger.Info("systemd is not running: units written but not enabled; use banger daemon start", "component", "sysinstall")
		return res, nil
	}
	for _, args := range [][]string{
		{"daemon-reload"},
		{"enable", updater.HelperUnit, updater.DaemonUnit},
		// A unit that failed in a loop hit its start limit: systemd refuses
		// to start it again, the reinstall meant to repair it included.
		{"reset-failed", updater.HelperUnit, updater.DaemonUnit},
		{"restart", updater.HelperUnit},
		{"restart", updater.DaemonUnit},
	} {
		if _, err := opts.Run(ctx, "systemctl", args...); err != nil {
			return res, fmt.Errorf("install: enable units: %w", err)
		}
	}
	res.UnitsEnabled = true
	return res, nil
}

// ensureOwnerState creates the owner daemon's BANGER_HOME layout owned by
// the owner (0700), under a root-owned /var/lib/banger. The owner can
// write its home, so below it nothing is looked up by path: each directory
// is made and opened from its parent's descriptor without following
// symlinks, and its owner and mode are set through its own descriptor.
func ensureOwnerState(sys paths.System, owner Owner) error {
	home := sys.Home()
	parent, err := system.OpenRootDir(filepath.Dir(home), true, 0o755)
	if err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(home), err)
	}
	defer parent.Close()
	hd, err := system.MkdirBeneath(parent, filepath.Base(home), 0o700, owner.UID, owner.GID)
	if err != nil {
		return fmt.Errorf("state directory %s: %w", home, err)
	}
	defer hd.Close()
	u := sys.User()
	for _, d := range []string{u.State, u.Data, u.Cache, u.Config, u.Runtime} {
		rel, err := filepath.Rel(home, d)
		if err != nil || strings.HasPrefix(rel, "..") {
			return fmt.Errorf("state directory %s is outside %s", d, home)
		}
		f, err := system.MkdirBeneath(hd, rel, 0o700, owner.UID, owner.GID)
		if err != nil {
			return fmt.Errorf("state directory %s (a symlink or non-directory there is refused): %w", d, err)
		}
		f.Close()
	}
	return nil
}

// UninstallOptions configure Uninstall.
type UninstallOptions struct {
	System     paths.System
	PurgeState bool // also delete the owner's state (VMs, images, store)
	IsSystemd  func() bool
	Run        updater.CommandRunner
}

// Uninstall stops and disables the units (when systemd runs), removes them,
// the binaries with any .previous backups, install.toml and the update
// staging area. The owner's state stays unless PurgeState. Every step is
// tried; errors are joined.
func Uninstall(ctx context.Context, opts UninstallOptions) error {
	if opts.IsSystemd == nil {
		opts.IsSystemd = SystemdRunning
	}
	if opts.Run == nil {
		opts.Run = updater.ExecRunner
	}
	sys := opts.System
	var errs []error
	systemd := opts.IsSystemd()
	if systemd {
		if _, err := opts.Run(ctx, "systemctl", "disable", "--now", updater.DaemonUnit, updater.HelperUnit); err != nil {
			errs = append(errs, fmt.Errorf("uninstall: disable units: %w", err))
		}
	}
	tg := updater.InstallTargets(sys)
	files := []string{
		filepath.Join(sys.UnitDir(), updater.DaemonUnit),
		filepath.Join(sys.UnitDir(), updater.HelperUnit),
		sys.InstallMeta(),
	}
	for _, p := range []string{tg.Agent, tg.Helper, tg.Bangerd, tg.Banger} {
		files = append(files, p, system.PreviousPath(p))
	}
	for _, p := range files {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("uninstall: %w", err))
		}
	}
	if systemd {
		if _, err := opts.Run(ctx, "systemctl", "daemon-reload"); err != nil {
			errs = append(errs, fmt.Errorf("uninstall: %w", err))
		}
	}
	for _, p := range []string{sys.StagingDir(), sys.StagingDir() + ".lock", updater.JournalPath(sys.StagingDir())} {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("uninstall: %w", err))
		}
	}
	if opts.PurgeState {
		for _, d := range []string{sys.Home(), sys.LogDir()} {
			if err := os.RemoveAll(d); err != nil {
				errs = append(errs, fmt.Errorf("uninstall: purge %s: %w", d, err))
			}
		}
	}
	// Directories banger created, removed only when empty.
	for _, d := range []string{filepath.Dir(tg.Agent), filepath.Dir(sys.InstallMeta()), filepath.Dir(sys.Home())} {
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) && !isNotEmpty(err) {
			errs = append(errs, fmt.Errorf("uninstall: %w", err))
		}
	}
	return errors.Join(errs...)
}

func isNotEmpty(err error) bool {
	return errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST)
}
