package updater

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/installmeta"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/progress"
)

// Sentinel errors of Run.
var (
	ErrNotRoot         = errors.New("banger update must run as root (sudo banger update)")
	ErrPreSwapCheck    = errors.New("pre-swap check of the new release failed")
	ErrVersionMismatch = errors.New("staged bangerd reports a different version than the release")
	ErrRolledBack      = errors.New("update failed and was rolled back")
	ErrBusy            = errors.New("another banger update is running")
)

// rollbackTimeout bounds rollback and restarts after a failure, which run
// even when the caller's context is cancelled.
const rollbackTimeout = 2 * time.Minute

// Options select what Run does.
type Options struct {
	System      paths.System
	ManifestURL string // "" means DefaultManifestURL
	PublicKey   []byte // PEM; nil means the embedded ReleasePublicKey
	To          string // install this version instead of the latest
	Check       bool   // only report whether an update is available
	DryRun      bool   // download, verify, stage and pre-check; swap nothing
	// CurrentVersion is used by --check when there is no install.toml (a
	// development checkout); a real update needs a system install.
	CurrentVersion string
	StagingDir     string // "" means DefaultStagingDir(System)
}

// Deps are Run's collaborators, injected so every step is testable.
type Deps struct {
	HTTP     *http.Client
	Services Services
	// Run runs the staged bangerd for the pre-swap checks.
	Run CommandRunner
	// Doctor checks the new install after the restart; nil skips it.
	Doctor   func(ctx context.Context) error
	Euid     func() int // nil means os.Geteuid
	Logger   *slog.Logger
	Progress progress.Func
	// AfterSwap, a test hook, runs after swap n (1-based) is done and
	// journalled; tests kill the process there.
	AfterSwap func(n int)
}

// BuildInfo is what the staged bangerd reports about itself.
type BuildInfo struct{ Version, Commit, BuiltAt string }

// Result reports what Run did.
type Result struct {
	Decision
	Checked    bool          // --check: nothing was downloaded
	DryRun     bool          // staged and checked, nothing swapped
	Installed  bool          // the new binaries are in place and healthy
	Swapped    []string      // targets replaced (cleared again after a rollback)
	RolledBack bool          // a failure after the swap was rolled back
	Staged     StagedRelease // where the release was staged (removed afterwards)
	Build      BuildInfo     // the installed build, when Installed
	Warnings   []string      // non-fatal problems after a successful install
	Recovery   Recovery      // what the replay of an interrupted update did
	// LatestSigned is the manifest's latest release as its signed
	// SHA256SUMS dates it (--check); a frozen manifest shows as an old date.
	LatestSigned SignedRelease
}

// SignedRelease is a release whose SHA256SUMS signature verified.
type SignedRelease struct {
	Version    string
	ReleasedAt time.Time
	Dated      bool // SHA256SUMS carries a release date
}

// Run performs `banger update`: require root → fetch the manifest → pick
// the version → download and verify → stage → pre-swap check with the
// staged bangerd → (dry run stops) → swap → restart helper → restart daemon
// → wait for the daemon → doctor → drop backups and refresh install.toml.
// Any failure after the first swap rolls the binaries back in reverse; after
// a restart was attempted the rolled-back services are restarted too.
func Run(ctx context.Context, opts Options, deps Deps) (Result, error) {
	u := &run{opts: opts, deps: deps}
	u.defaults()
	return u.do(ctx)
}

type run struct {
	opts Options
	deps Deps
	log  *slog.Logger
}

func (u *run) defaults() {
	if u.opts.ManifestURL == "" {
		u.opts.ManifestURL = DefaultManifestURL
	}
	if u.opts.PublicKey == nil {
		u.opts.PublicKey = ReleasePublicKey
	}
	if u.opts.StagingDir == "" {
		u.opts.StagingDir = DefaultStagingDir(u.opts.System)
	}
	if u.deps.Euid == nil {
		u.deps.Euid = os.Geteuid
	}
	if u.deps.Run == nil {
		u.deps.Run = ExecRunner
	}
	u.deps.HTTP = SecureClient(u.deps.HTTP)
	u.log = u.deps.Logger
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
}

func (u *run) stage(msg string) {
	u.log.Info(msg, "component", "updater")
	u.deps.Progress.Stage("update", msg)
}

func (u *run) do(ctx context.Context) (Result, error) {
	var res Result
	if !u.opts.Check && u.deps.Euid() != 0 {
		return res, ErrNotRoot
	}
	metaPath := u.opts.System.InstallMeta()
	meta, err := installmeta.Read(metaPath)
	current := meta.Version
	if err != nil {
		if !u.opts.Check || !errors.Is(err, installmeta.ErrNotInstalled) || u.opts.CurrentVersion == "" {
			return res, fmt.Errorf("update: %w", err)
		}
		current = u.opts.CurrentVersion
	}

	u.stage("fetching release manifest")
	m, err := FetchManifestFrom(ctx, u.deps.HTTP, u.opts.ManifestURL)
	if err != nil {
		return res, fmt.Errorf("update: %w", err)
	}
	res.Decision, err = Decide(m, current, u.opts.To)
	if err != nil {
		return res, fmt.Errorf("update: %w (available: %v)", err, m.Versions())
	}
	if u.opts.Check {
		res.Checked = true
		res.LatestSigned, err = u.latestSigned(ctx, m)
		if err != nil {
			return res, fmt.Errorf("update --check: %w", err)
		}
		return res, nil
	}
	pending := JournalExists(u.opts.StagingDir)
	if !res.UpdateAvailable && !pending {
		return res, nil
	}
	if pending && u.opts.DryRun {
		// A dry run changes nothing, and its download would wipe the
		// staged release the journal may need.
		return res, fmt.Errorf("update --dry-run: an interrupted update is pending (%s): settle it first with sudo banger update or sudo banger doctor", JournalPath(u.opts.StagingDir))
	}
	if u.deps.Services == nil {
		return res, errors.New("update: no service manager to restart banger with")
	}
	var rel Release
	if res.UpdateAvailable {
		if rel, err = m.Find(res.Target); err != nil {
			return res, fmt.Errorf("update: %w", err)
		}
	}

	unlock, err := lockUpdates(u.opts.StagingDir + ".lock")
	if err != nil {
		return res, fmt.Errorf("update: %w", err)
	}
	defer unlock()

	// An interrupted update comes first: it is completed or reverted before
	// anything touches the staging area or the backups its journal needs.
	res.Recovery, err = u.recoverJournal(ctx)
	if err != nil {
		return res, fmt.Errorf("update: an interrupted update could not be recovered, nothing else was changed: %w", err)
	}
	if res.Recovery.Completed {
		res.Current = res.Recovery.To
		if res.Recovery.To == rel.Version || !res.UpdateAvailable {
			res.Installed = true
			if meta, err := installmeta.Read(metaPath); err == nil {
				res.Build = BuildInfo{Version: meta.Version, Commit: meta.Commit, BuiltAt: meta.BuiltAt}
			}
			return res, nil
		}
	}
	if !res.UpdateAvailable {
		return res, nil // only the interrupted update was to settle
	}

	u.stage(fmt.Sprintf("downloading and verifying %s", rel.Version))
	dl, err := DownloadRelease(ctx, u.deps.HTTP, rel, u.opts.PublicKey, u.opts.StagingDir, u.deps.Progress)
	// The staging directory is transient: cleared on every outcome (a
	// killed update leaves it for the journal's replay).
	defer os.RemoveAll(u.opts.StagingDir)
	if err != nil {
		return res, fmt.Errorf("update: %w", err)
	}
	u.stage("unpacking release")
	res.Staged, err = StageTarball(dl.Tarball, u.opts.StagingDir)
	if err != nil {
		return res, fmt.Errorf("update: %w", err)
	}
	build, err := u.preSwapCheck(ctx, res.Staged, rel.Version)
	if err != nil {
		return res, fmt.Errorf("update: %w", err)
	}
	if u.opts.DryRun {
		res.DryRun = true
		return res, nil
	}

	targets := InstallTargets(u.opts.System)
	j, err := newJournal(res.Current, build, res.Staged, targets)
	if err != nil {
		return res, fmt.Errorf("update: %w", err)
	}
	// The journal is on disk before the first swap: from here on a killed
	// update is replayed, never left mixed.
	if err := writeJournal(JournalPath(u.opts.StagingDir), j); err != nil {
		return res, fmt.Errorf("update: %w", err)
	}
	u.stage("swapping binaries")
	_, err = swapWith(res.Staged, targets, func(n int, target string) error {
		u.stage(fmt.Sprintf("swapped %s (%d of %d)", target, n, len(j.Steps)))
		j.Steps[n-1].Swapped = true
		res.Swapped = append(res.Swapped, target)
		if err := writeJournal(JournalPath(u.opts.StagingDir), j); err != nil {
			return err
		}
		if u.deps.AfterSwap != nil {
			u.deps.AfterSwap(n)
		}
		return nil
	})
	if err != nil {
		return res, u.rollback(ctx, &res, j, false, err)
	}
	j.Phase = PhaseSwapped
	if err := writeJournal(JournalPath(u.opts.StagingDir), j); err != nil {
		return res, u.rollback(ctx, &res, j, false, err)
	}
	if err := u.restartAndCheck(ctx); err != nil {
		return res, u.rollback(ctx, &res, j, true, err)
	}

	if err := u.commit(j); err != nil {
		return res, fmt.Errorf("update: %w", err)
	}
	res.Installed = true
	res.Build = build
	u.stage(fmt.Sprintf("updated %s → %s", res.Current, build.Version))
	return res, nil
}

// newJournal records the swap about to happen: every target's current and
// staged hash. Every target must exist: an update replaces an install.
func newJournal(from string, build BuildInfo, staged StagedRelease, t Targets) (*Journal, error) {
	j := &Journal{Schema: journalSchema, From: from, To: build.Version, Build: build, Phase: PhaseSwapping}
	for i, src := range staged.all() {
		dst := t.all()[i]
		oldSum, err := fileSHA256(dst)
		if err == nil && oldSum == "" {
			err = fmt.Errorf("%s is not installed (reinstall with sudo banger system install)", dst)
		}
		if err != nil {
			return nil, fmt.Errorf("journal the swap: %w", err)
		}
		newSum, err := fileSHA256(src)
		if err != nil || newSum == "" {
			return nil, fmt.Errorf("journal the swap: staged %s unreadable: %w", src, err)
		}
		j.Steps = append(j.Steps, SwapEntry{Target: dst, Staged: src, OldSHA256: oldSum, NewSHA256: newSum})
	}
	return j, nil
}

// latestSigned verifies the SHA256SUMS of the manifest's latest release
// and reads its release date.
func (u *run) latestSigned(ctx context.Context, m *Manifest) (SignedRelease, error) {
	rel, err := m.Find(m.Latest)
	if err != nil {
		return SignedRelease{}, err
	}
	sums, err := FetchSignedSums(ctx, u.deps.HTTP, rel, u.opts.PublicKey)
	if err != nil {
		return SignedRelease{}, err
	}
	at, ok, err := ReleasedAt(sums)
	if err != nil {
		return SignedRelease{}, fmt.Errorf("release %s: %w", rel.Version, err)
	}
	return SignedRelease{Version: rel.Version, ReleasedAt: at, Dated: ok}, nil
}

// versionLine parses `bangerd --version`: "bangerd v0.2.0 (commit abc,
// built 2026-…, go1.26…)".
var versionLine = regexp.MustCompile(`^bangerd (\S+)(?: \(commit ([^,)]+), built ([^,)]+))?`)

// preSwapCheck runs the staged bangerd: it must report the release's
// version, and `--check-migrations --system` must pass (the new binary can
// migrate the existing store). Nothing on the host has changed yet.
func (u *run) preSwapCheck(ctx context.Context, staged StagedRelease, version string) (BuildInfo, error) {
	u.stage("pre-swap check: staged bangerd --version")
	out, err := u.deps.Run(ctx, staged.Bangerd, "--version")
	if err != nil {
		return BuildInfo{}, fmt.Errorf("%w: bangerd --version: %w", ErrPreSwapCheck, err)
	}
	mm := versionLine.FindStringSubmatch(string(out))
	if mm == nil {
		return BuildInfo{}, fmt.Errorf("%w: cannot parse bangerd --version output %q", ErrPreSwapCheck, firstLine(out))
	}
	b := BuildInfo{Version: mm[1], Commit: orUnknown(mm[2]), BuiltAt: orUnknown(mm[3])}
	if b.Version != version {
		return BuildInfo{}, fmt.Errorf("%w: %s, want %s", ErrVersionMismatch, b.Version, version)
	}
	u.stage("pre-swap check: staged bangerd --check-migrations --system")
	if out, err := u.deps.Run(ctx, staged.Bangerd, "--check-migrations", "--system"); err != nil {
		return BuildInfo{}, fmt.Errorf("%w: bangerd --check-migrations --system: %w (%s)", ErrPreSwapCheck, err, firstLine(out))
	}
	return b, nil
}

// rollback restores the previous binaries after a failure in Run. When a
// restart was already attempted (restart=true) the rolled-back helper and
// daemon are restarted and awaited too, so the old version is running
// again. On an incomplete rollback the journal stays for the next replay.
func (u *run) rollback(ctx context.Context, res *Result, j *Journal, restart bool, cause error) error {
	u.log.Error("update failed; rolling back", "component", "updater", "err", cause)
	u.deps.Progress.Stage("update", "failed; rolling back: "+cause.Error())
	res.RolledBack = true
	if err := u.revert(ctx, j, restart); err != nil {
		return fmt.Errorf("update to %s failed and rollback was incomplete (the journal %s is kept: the next sudo banger update, sudo banger doctor or service start retries it): %w",
			res.Target, JournalPath(u.opts.StagingDir), errors.Join(cause, err))
	}
	res.Swapped = nil
	return fmt.Errorf("update to %s: %w: %w", res.Target, ErrRolledBack, cause)
}

// lockUpdates takes an exclusive, non-blocking lock so two updates never
// interleave their swaps.
func lockUpdates(path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("lock updates: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock updates: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrBusy
		}
		return nil, fmt.Errorf("lock updates: %w", err)
	}
	return func() { f.Close() }, nil
}

func firstLine(b []byte) string {
	s := string(b)
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	if len(s) > 200 {
		return s[:200]
	}
	return s
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
