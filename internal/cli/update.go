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
	"syscall"
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
	killAfterSwap      int
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
running VMs are not touched. The new banger's own doctor then checks the
install. If anything after the first swap fails, the previous binaries are
restored and restarted. Every swap is journalled first: an update killed
half way is completed (staged release intact) or reverted by the next
update, by sudo banger doctor, or when the services start.

Every URL must be https (plain http only to a loopback host). --check also
prints the release date signed into the newest release's SHA256SUMS: a
manifest frozen on an old release shows its age.

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
	fl.IntVar(&f.killAfterSwap, "test-kill-after-swap", 0, "SIGKILL this process right after swap N is journalled (tests of the update journal)")
	_ = fl.MarkHidden("manifest-url")
	_ = fl.MarkHidden("pubkey-file")
	_ = fl.MarkHidden("test-kill-after-swap")
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
		if ls := res.LatestSigned; ls.Dated {
			fmt.Fprintf(w, "newest signed release: %s, released %s\n", ls.Version, ls.ReleasedAt.UTC().Format(time.RFC3339))
		} else {
			fmt.Fprintf(w, "newest signed release: %s (its signed SHA256SUMS carries no release date)\n", ls.Version)
		}
		if updater.JournalExists(sys.StagingDir()) {
			fmt.Fprintln(w, "an interrupted update is pending: sudo banger update or sudo banger doctor completes or reverts it")
		}
		if res.UpdateAvailable {
			fmt.Fprintf(w, "update available: %s (%s)\n", res.Target, res.Reason)
		} else {
			fmt.Fprintf(w, "up to date (%s)\n", res.Reason)
		}
		return nil
	}
	// An interrupted update is settled by the run below even when there
	// is nothing new to install.
	pending := updater.JournalExists(sys.StagingDir())
	if !res.UpdateAvailable && !pending {
		fmt.Fprintf(w, "nothing to do: %s\n", res.Reason)
		return nil
	}
	if res.UpdateAvailable {
		fmt.Fprintf(w, "update %s → %s (%s)\n", res.Current, res.Target, res.Reason)
	} else {
		fmt.Fprintln(w, "an interrupted update is pending: completing or reverting it")
	}
	if !f.dryRun && !f.yes {
		question := fmt.Sprintf("install %s and restart the root helper and the daemon (running VMs keep running)?", res.Target)
		if !res.UpdateAvailable {
			question = "complete or revert the interrupted update and restart the root helper and the daemon (running VMs keep running)?"
		}
		if err := a.confirm(w, question); err != nil {
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
	var kind string
	deps.Services, kind = a.installServices(sys, meta)
	fmt.Fprintln(w, "services: "+kind)
	// The health check is the new release's own doctor, run once the new
	// binaries are in place.
	deps.Doctor = updater.InstalledDoctor(sys.BangerBin(), nil)
	if f.killAfterSwap > 0 {
		deps.AfterSwap = func(n int) {
			if n == f.killAfterSwap {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	}
	res, err = updater.Run(ctx, opts, deps)
	renderer.Close()
	if r := res.Recovery; r.Completed {
		fmt.Fprintf(w, "completed the interrupted update %s → %s\n", r.From, r.To)
	} else if r.Reverted {
		fmt.Fprintf(w, "reverted the interrupted update %s → %s (%s)\n", r.From, r.To, r.Reason)
	}
	if err != nil {
		if res.RolledBack {
			fmt.Fprintf(w, "update to %s failed; rolled back to %s\n", res.Target, res.Current)
		}
		return err
	}
	if res.Recovery.Completed && res.Recovery.To == res.Target {
		fmt.Fprintf(w, "updated %s → %s; the root helper and the daemon were restarted\n", res.Recovery.From, res.Target)
		return nil
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

// installServices is what restarts the system install's helper and
// daemon: systemd's units when systemd runs the host, else the supervisor.
func (a *app) installServices(sys paths.System, meta installmeta.Meta) (updater.Services, string) {
	if sysinstall.SystemdRunning() {
		return updater.SystemdServices{Probe: daemonProbe(sys.User().Socket())}, "systemd (bangerd-root.service, bangerd.service)"
	}
	return a.newSupervisor(sys, meta), "banger's supervisor (systemd is not running this host)"
}

// updateJournalCheck replays the journal an interrupted `banger update`
// left (as root: complete or revert it, restarting the services) and
// reports the outcome as a doctor check; ok is false when there is none.
func (a *app) updateJournalCheck(ctx context.Context) (doctor.Check, bool) {
	const name = "update journal"
	sys, meta, ok, err := a.systemInstall()
	if err != nil || !ok || !updater.JournalExists(sys.StagingDir()) {
		return doctor.Check{}, false
	}
	if os.Geteuid() != 0 {
		return doctor.Check{Name: name, Status: doctor.Fail,
			Detail: "an interrupted update may have left the binaries of two versions installed",
			Fix:    "sudo banger doctor (completes or reverts it)"}, true
	}
	services, _ := a.installServices(sys, meta)
	rec, err := updater.Recover(ctx, updater.Options{System: sys}, updater.Deps{
		Services: services, Doctor: updater.InstalledDoctor(sys.BangerBin(), nil), Logger: a.log,
	})
	switch {
	case err != nil:
		return doctor.Check{Name: name, Status: doctor.Fail, Detail: err.Error(),
			Fix: "check the installed binaries against their .previous copies, or reinstall with sudo banger system install"}, true
	case rec.Busy:
		return doctor.Check{Name: name, Status: doctor.Warn, Detail: "an update is in progress"}, true
	case rec.Completed:
		return doctor.Check{Name: name, Status: doctor.OK, Detail: fmt.Sprintf("completed the interrupted update %s → %s", rec.From, rec.To)}, true
	case rec.Reverted:
		return doctor.Check{Name: name, Status: doctor.OK, Detail: fmt.Sprintf("reverted the interrupted update %s → %s (%s)", rec.From, rec.To, rec.Reason)}, true
	}
	return doctor.Check{}, false
}

// daemonProbe reports whether the owner daemon answers on its socket.
func daemonProbe(socket string) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := rpc.Invoke(ctx, rpc.NewClient(socket), api.MethodDaemonStatus, api.Empty{})
		return err
	}
}
