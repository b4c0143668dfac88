package updater

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/bangerdev/banger/internal/installmeta"
	"github.com/bangerdev/banger/internal/system"
)

// Recovery reports what the replay of an interrupted update's journal did.
type Recovery struct {
	Found     bool   // a journal was there
	Busy      bool   // another update holds the lock: it owns the journal
	Completed bool   // the swap was finished, checked healthy and committed
	Reverted  bool   // the previous binaries were restored
	From, To  string // the interrupted update's versions
	Reason    string // why it was reverted
}

// Recover completes or reverts an update that was killed after it began
// swapping binaries (see doc.go, "Interrupted updates"). It is what `banger
// doctor` and the supervisor's service start call; `banger update` does the
// same under its own lock before anything else. Without a journal it
// changes nothing and creates nothing. deps.Services, when set, restarts the
// helper and the daemon on the recovered binaries; deps.Doctor checks a
// completed install before it is committed.
func Recover(ctx context.Context, opts Options, deps Deps) (Recovery, error) {
	u := &run{opts: opts, deps: deps}
	u.defaults()
	if !JournalExists(u.opts.StagingDir) {
		return Recovery{}, nil
	}
	if u.deps.Euid() != 0 {
		return Recovery{Found: true}, fmt.Errorf("an interrupted update left %s: recovering it needs root (sudo banger doctor)", JournalPath(u.opts.StagingDir))
	}
	unlock, err := lockUpdates(u.opts.StagingDir + ".lock")
	if errors.Is(err, ErrBusy) {
		return Recovery{Found: true, Busy: true}, nil
	}
	if err != nil {
		return Recovery{Found: true}, fmt.Errorf("recover interrupted update: %w", err)
	}
	defer unlock()
	return u.recoverJournal(ctx)
}

// recoverJournal replays the journal; the caller holds the update lock.
func (u *run) recoverJournal(ctx context.Context) (Recovery, error) {
	path := JournalPath(u.opts.StagingDir)
	tg := InstallTargets(u.opts.System)
	j, err := readJournal(path, tg, u.opts.StagingDir)
	if err != nil {
		return Recovery{Found: true}, fmt.Errorf("recover interrupted update: %w (check the four binaries by hand, then remove the journal)", err)
	}
	if j == nil {
		return Recovery{}, nil
	}
	rec := Recovery{Found: true, From: j.From, To: j.To}
	u.log.Warn("replaying the journal of an interrupted update", "component", "updater", "from", j.From, "to", j.To, "phase", j.Phase)
	switch j.Phase {
	case PhaseCommitting:
		if err := u.commit(j); err != nil {
			return rec, fmt.Errorf("recover interrupted update: %w", err)
		}
		rec.Completed = true
		return rec, nil
	case PhaseRollingBack:
		rec.Reason = "it was rolling back when it stopped"
		return u.revertRecovery(ctx, j, rec)
	}

	if reason := completable(j, u.opts.StagingDir); reason != "" {
		rec.Reason = reason
		return u.revertRecovery(ctx, j, rec)
	}
	u.stage(fmt.Sprintf("completing the interrupted update %s → %s", j.From, j.To))
	if err := u.swapRemaining(j); err != nil {
		rec.Reason = err.Error()
		return u.revertRecovery(ctx, j, rec)
	}
	if err := u.restartAndCheck(ctx); err != nil {
		rec.Reason = "the completed install is not healthy: " + err.Error()
		return u.revertRecovery(ctx, j, rec)
	}
	if err := u.commit(j); err != nil {
		return rec, fmt.Errorf("recover interrupted update: %w", err)
	}
	rec.Completed = true
	return rec, nil
}

// completable says why the swap cannot be completed ("" when it can): each
// target must hold its old or its new binary, and each target still to
// swap needs its staged copy intact (the hash recorded after the signed
// tarball was verified and unpacked).
func completable(j *Journal, stagingDir string) string {
	if err := checkPrivateDirs(filepath.Dir(stagingDir), stagingDir, filepath.Join(stagingDir, "release")); err != nil {
		return err.Error()
	}
	for i := range j.Steps {
		s := &j.Steps[i]
		cur, err := fileSHA256(s.Target)
		if err != nil {
			return err.Error()
		}
		switch cur {
		case s.NewSHA256:
			s.Swapped = true
			continue
		case s.OldSHA256:
			s.Swapped = false
		default:
			return fmt.Sprintf("%s is neither the old nor the new binary", s.Target)
		}
		staged, err := fileSHA256(s.Staged)
		if err != nil || staged != s.NewSHA256 {
			return fmt.Sprintf("the staged %s is missing or altered", filepath.Base(s.Staged))
		}
	}
	return ""
}

// checkPrivateDirs checks that each directory is a real directory owned by
// us and writable by nobody else, so the staged files recovery hashes are
// the ones it then installs.
func checkPrivateDirs(dirs ...string) error {
	for _, d := range dirs {
		st, err := os.Lstat(d)
		if err != nil {
			return fmt.Errorf("staging: %w", err)
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !st.IsDir() || !ok || int(sys.Uid) != os.Geteuid() || st.Mode().Perm()&0o022 != 0 {
			return fmt.Errorf("staging directory %s is not a directory owned by uid %d and writable only by it", d, os.Geteuid())
		}
	}
	return nil
}

// swapRemaining swaps in the staged binaries not swapped yet, journalling
// each step, and checks what landed.
func (u *run) swapRemaining(j *Journal) error {
	path := JournalPath(u.opts.StagingDir)
	for i := range j.Steps {
		s := &j.Steps[i]
		if s.Swapped {
			continue
		}
		if err := system.AtomicReplace(s.Staged, s.Target); err != nil {
			return fmt.Errorf("complete swap: %w", err)
		}
		if got, err := fileSHA256(s.Target); err != nil || got != s.NewSHA256 {
			return fmt.Errorf("complete swap: %s does not hold the staged binary after the swap", s.Target)
		}
		s.Swapped = true
		if err := writeJournal(path, j); err != nil {
			return err
		}
	}
	j.Phase = PhaseSwapped
	return writeJournal(path, j)
}

// restartAndCheck restarts the helper and the daemon on the installed
// binaries, waits for the daemon and runs the health check.
func (u *run) restartAndCheck(ctx context.Context) error {
	if u.deps.Services == nil {
		return errors.New("no service manager to restart banger with")
	}
	u.stage("restarting root helper")
	if err := u.deps.Services.RestartHelper(ctx); err != nil {
		return err
	}
	u.stage("restarting daemon")
	if err := u.deps.Services.RestartDaemon(ctx); err != nil {
		return err
	}
	if err := u.deps.Services.WaitDaemonReady(ctx); err != nil {
		return err
	}
	if u.deps.Doctor != nil {
		u.stage("checking the new install (doctor)")
		if err := u.deps.Doctor(ctx); err != nil {
			return fmt.Errorf("doctor: %w", err)
		}
	}
	return nil
}

// commit makes a healthy update final: the journal says so first, then the
// backups go, install.toml takes the new build, and the journal goes last,
// so a crash anywhere in between replays to the same end.
func (u *run) commit(j *Journal) error {
	path := JournalPath(u.opts.StagingDir)
	j.Phase = PhaseCommitting
	if err := writeJournal(path, j); err != nil {
		return err
	}
	if err := CleanupBackups(InstallTargets(u.opts.System)); err != nil {
		u.log.Warn("update committed but a backup was not removed", "component", "updater", "err", err)
	}
	if err := installmeta.UpdateBuildInfo(u.opts.System.InstallMeta(), j.Build.Version, j.Build.Commit, j.Build.BuiltAt); err != nil {
		return fmt.Errorf("%s is installed but %w", j.Build.Version, err)
	}
	if err := removeJournal(path); err != nil {
		return err
	}
	return os.RemoveAll(u.opts.StagingDir)
}

func (u *run) revertRecovery(ctx context.Context, j *Journal, rec Recovery) (Recovery, error) {
	u.log.Warn("reverting the interrupted update", "component", "updater", "reason", rec.Reason)
	u.stage(fmt.Sprintf("reverting the interrupted update %s → %s: %s", j.From, j.To, rec.Reason))
	if err := u.revert(ctx, j, true); err != nil {
		return rec, fmt.Errorf("recover interrupted update: %w", err)
	}
	rec.Reverted = true
	return rec, nil
}

// revert restores the old binary of every target, in reverse swap order,
// from its .previous backup, then (restart) restarts the services. A target
// already holding its old binary is left alone. The journal is removed only
// once every binary is the old one again and the services restarted; until
// then it stays, with the backups it needs.
func (u *run) revert(ctx context.Context, j *Journal, restart bool) error {
	path := JournalPath(u.opts.StagingDir)
	j.Phase = PhaseRollingBack
	if err := writeJournal(path, j); err != nil {
		return err
	}
	var errs []error
	for i := len(j.Steps) - 1; i >= 0; i-- {
		s := &j.Steps[i]
		cur, err := fileSHA256(s.Target)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if cur == s.OldSHA256 {
			continue
		}
		if cur != s.NewSHA256 {
			// Neither version: someone else put it there; not ours to replace.
			errs = append(errs, fmt.Errorf("roll back %s: it is neither the old nor the new binary, left as is", s.Target))
			continue
		}
		prev, err := fileSHA256(system.PreviousPath(s.Target))
		if err != nil || prev != s.OldSHA256 {
			errs = append(errs, fmt.Errorf("roll back %s: %s does not hold the previous binary", s.Target, system.PreviousPath(s.Target)))
			continue
		}
		u.stage("restoring " + s.Target)
		if err := system.Rollback(s.Target); err != nil {
			errs = append(errs, err)
			continue
		}
		s.Swapped = false
		if err := writeJournal(path, j); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("roll back binaries: %w", errors.Join(errs...))
	}
	// A backup equal to the restored binary (an update killed between
	// keeping it and the rename) is redundant now.
	for _, s := range j.Steps {
		if prev, err := fileSHA256(system.PreviousPath(s.Target)); err == nil && prev == s.OldSHA256 {
			_ = system.RemoveBackup(s.Target)
		}
	}
	if restart && u.deps.Services != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
		if err := u.deps.Services.RestartHelper(rctx); err != nil {
			errs = append(errs, fmt.Errorf("after rollback: %w", err))
		}
		if err := u.deps.Services.RestartDaemon(rctx); err != nil {
			errs = append(errs, fmt.Errorf("after rollback: %w", err))
		} else if err := u.deps.Services.WaitDaemonReady(rctx); err != nil {
			errs = append(errs, fmt.Errorf("after rollback: %w", err))
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
	}
	if err := removeJournal(path); err != nil {
		return err
	}
	return os.RemoveAll(u.opts.StagingDir)
}
