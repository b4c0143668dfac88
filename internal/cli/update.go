package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/buildinfo"
	"github.com/bangerdev/banger/internal/doctor"
	"github.com/bangerdev/banger/internal/installmeta"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/sysinstall"
	"github.com/bangerdev/banger/internal/updater"
)

// errNoConfirmation is returned when an update needs a yes and there is no
// terminal to ask on.
var errNoConfirmation = errors.New("refusing to update without confirmation: stdin is not a terminal (pass --yes)")

type updateFlags struct {
	check, dryRun, yes bool
	to                 string
	manifestURL        string
	pubkeyFile         string
}

func newUpdateCommand(a *app) *cobra.Command {
	var f updateFlags
	cmd := &cobra.Command{
		Use:   "update",
		Short: "Update the system install to a new signed release (VMs keep running)",
		Long: `Update banger's system install. The release manifest is fetched, the
release's SHA256SUMS is verified against banger's release key before any hash
in it is trusted, and the tarball is downloaded with its hash checked while
streaming. The staged bangerd must pass --check-migrations --system. Then the
vsock agent, bangerd and banger are swapped in that order (each keeping a
.previous copy), and the root helper and the owner daemon are restarted;
running VMs are not touched. If anything after the first swap fails, the
previous binaries are restored and restarted.

Without --to only a newer release is installed; --to installs exactly that
version (also an older one). --check only says whether an update is
available; --dry-run downloads, verifies, stages and checks, then stops.`,
		Example: `  banger update --check
  sudo banger update
  sudo banger update --to v0.2.0 --yes
  sudo banger update --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return a.runUpdate(cmd.Context(), cmd.OutOrStdout(), f) },
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.check, "check", false, "only report whether an update is available")
	fl.StringVar(&f.to, "to", "", "install this version (must be listed in the manifest)")
	fl.BoolVar(&f.dryRun, "dry-run", false, "download, verify, stage and check the release; change nothing")
	fl.BoolVar(&f.yes, "yes", false, "do not ask for confirmation")
	fl.StringVar(&f.manifestURL, "manifest-url", "", "release manifest URL (tests)")
	fl.StringVar(&f.pubkeyFile, "pubkey-file", "", "PEM public key to verify releases with instead of the embedded one (tests)")
	_ = fl.MarkHidden("manifest-url")
	_ = fl.MarkHidden("pubkey-file")
	return cmd
}

func (a *app) runUpdate(ctx context.Context, w io.Writer, f updateFlags) error {
	if f.check && f.dryRun {
		return &UsageError{Err: errors.New("--check and --dry-run exclude each other")}
	}
	sys := paths.SystemFromEnv(a.env.Getenv)
	opts := updater.Options{
		System: sys, ManifestURL: f.manifestURL, To: f.to,
		CurrentVersion: buildinfo.Version,
	}
	if f.pubkeyFile != "" {
		key, err := os.ReadFile(f.pubkeyFile)
		if err != nil {
			return fmt.Errorf("read --pubkey-file: %w", err)
		}
		opts.PublicKey = key
	}
	renderer := newProgressRenderer(a.env.Stderr)
	defer renderer.Close()
	deps := updater.Deps{
		HTTP:     &http.Client{Timeout: 15 * time.Minute},
		Run:      updater.ExecRunner,
		Logger:   a.log,
		Progress: progress.Func(renderer.Handle),
	}
	// Refuse early, before even the manifest is fetched: nothing may change
	// on the host without root, and the answer does not depend on it.
	if !f.check && os.Geteuid() != 0 {
		return updater.ErrNotRoot
	}

	// Decide first (no host change), so the user confirms a known target.
	checkOpts := opts
	checkOpts.Check = true
	res, err := updater.Run(ctx, checkOpts, deps)
	if err != nil {
		return err
	}
	if f.check {
		fmt.Fprintf(w, "installed: %s\n", res.Current)
		if res.UpdateAvailable {
			fmt.Fprintf(w, "update available: %s (%s)\n", res.Target, res.Reason)
		} else {
			fmt.Fprintf(w, "up to date (%s)\n", res.Reason)
		}
		return nil
	}
	if !res.UpdateAvailable {
		fmt.Fprintf(w, "nothing to do: %s\n", res.Reason)
		return nil
	}
	fmt.Fprintf(w, "update %s → %s (%s)\n", res.Current, res.Target, res.Reason)
	if !f.dryRun && !f.yes {
		if err := a.confirm(w, fmt.Sprintf("install %s and restart the root helper and the daemon (running VMs keep running)?", res.Target)); err != nil {
			return err
		}
	}

	opts.DryRun = f.dryRun
	// Install the decided target even if the manifest's latest moved since.
	opts.To = res.Target
	meta, err := installmeta.Read(sys.InstallMeta())
	if err != nil {
		return fmt.Errorf("update: %w (install banger with `sudo banger system install` first)", err)
	}
	if sysinstall.SystemdRunning() {
		deps.Services = updater.SystemdServices{Probe: daemonProbe(sys.User().Socket())}
		fmt.Fprintln(w, "services: systemd (bangerd-root.service, bangerd.service)")
	} else {
		deps.Services = a.newSupervisor(sys, meta)
		fmt.Fprintln(w, "services: banger's supervisor (systemd is not running this host)")
	}
	deps.Doctor = installDoctor(sys, a)
	res, err = updater.Run(ctx, opts, deps)
	renderer.Close()
	if err != nil {
		if res.RolledBack {
			fmt.Fprintf(w, "update to %s failed; rolled back to %s\n", res.Target, res.Current)
		}
		return err
	}
	if res.DryRun {
		fmt.Fprintf(w, "dry run: %s downloaded, verified, staged and checked (bangerd --check-migrations --system passed); nothing was swapped, %s stays installed\n", res.Target, res.Current)
		return nil
	}
	for _, warn := range res.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	fmt.Fprintf(w, "updated %s → %s (commit %s); the root helper and the daemon were restarted\n", res.Current, res.Build.Version, res.Build.Commit)
	return nil
}

// confirm asks a yes/no question on the terminal; without one it refuses
// instead of waiting on a stdin nobody writes to.
func (a *app) confirm(w io.Writer, question string) error {
	f, ok := a.env.Stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return errNoConfirmation
	}
	fmt.Fprintf(w, "%s [y/N] ", question)
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && line == "" {
		return fmt.Errorf("read confirmation: %w", err)
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return errors.New("update cancelled")
}

// installDoctor is the updater's post-restart health check: banger
// doctor's verdict on the install itself (store, daemon, root helper). Host
// findings (a missing debootstrap, disk space) do not roll an update back.
func installDoctor(sys paths.System, a *app) func(context.Context) error {
	return func(ctx context.Context) error {
		rep := doctor.Run(ctx, a.ownerStateDoctor(doctor.Config{Paths: sys.User(), Logger: a.log}, sys))
		var failed []string
		for _, name := range []string{doctor.CheckStore, doctor.CheckDaemon, doctor.CheckHelper} {
			if c, ok := rep.Find(name); ok && c.Status == doctor.Fail {
				failed = append(failed, fmt.Sprintf("%s: %s", c.Name, c.Detail))
			}
		}
		if len(failed) > 0 {
			return errors.New(strings.Join(failed, "; "))
		}
		return nil
	}
}

// daemonProbe reports whether the owner daemon answers on its socket.
func daemonProbe(socket string) func(context.Context) error {
	return func(ctx context.Context) error {
		return rpc.NewClient(socket).Call(ctx, api.MethodDaemonStatus, nil, nil)
	}
}
