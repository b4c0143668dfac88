package updater

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/bangerdev/banger/internal/installmeta"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/system"
)

// Environment of the re-executed test binary that performs an update and
// SIGKILLs itself after swap N (TestJournalKilledUpdateHelper).
const (
	envKillRoot     = "BANGER_UPDATER_TEST_KILL_ROOT"
	envKillAfter    = "BANGER_UPDATER_TEST_KILL_AFTER"
	envKillManifest = "BANGER_UPDATER_TEST_MANIFEST"
	envKillPubkey   = "BANGER_UPDATER_TEST_PUBKEY"
)

// TestJournalKilledUpdateHelper is not a test of its own: run by
// killedUpdate in a child process, it updates the install under
// $BANGER_UPDATER_TEST_KILL_ROOT and is SIGKILLed by the AfterSwap hook, so
// no deferred cleanup of Run runs, as with a real kill.
func TestJournalKilledUpdateHelper(t *testing.T) {
	root := os.Getenv(envKillRoot)
	if root == "" {
		return // only meaningful as the child of killedUpdate
	}
	n, err := strconv.Atoi(os.Getenv(envKillAfter))
	if err != nil {
		t.Fatal(err)
	}
	sys := paths.System{Root: root}
	pub, err := os.ReadFile(os.Getenv(envKillPubkey))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Run(context.Background(),
		Options{System: sys, ManifestURL: os.Getenv(envKillManifest), PublicKey: pub},
		Deps{
			Services: &fakeServices{bangerd: InstallTargets(sys).Bangerd},
			Euid:     func() int { return 0 },
			AfterSwap: func(done int) {
				if done == n {
					syscall.Kill(os.Getpid(), syscall.SIGKILL)
				}
			},
		})
	t.Fatalf("update was not killed after swap %d: %v", n, err)
}

// killedUpdate runs the update of e in a child process that dies by
// SIGKILL right after swap n.
func killedUpdate(t *testing.T, e *updateEnv, n int) {
	t.Helper()
	pubFile := filepath.Join(t.TempDir(), "release.pub")
	if err := os.WriteFile(pubFile, e.rs.pub, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestJournalKilledUpdateHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		envKillRoot+"="+e.sys.Root, envKillAfter+"="+strconv.Itoa(n),
		envKillManifest+"="+e.opts.ManifestURL, envKillPubkey+"="+pubFile)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child update was not killed: %v\n%s", err, out)
	}
}

// newBins is the content of v0.2.0's binaries in newUpdateEnv, by target.
func (e *updateEnv) newBins() map[string]string {
	return map[string]string{e.tg.Banger: "new-cli", e.tg.Bangerd: fakeBangerd("v0.2.0", 0, "new"), e.tg.Agent: "new-agent", e.tg.Helper: "new-helper"}
}

// assertMixed checks the state a kill after swap n leaves: the first n
// targets (swap order) new with their .previous kept, the rest old, and a
// journal.
func (e *updateEnv) assertMixed(t *testing.T, n int) {
	t.Helper()
	got := snapshot(t, e.tg)
	for i, p := range e.tg.all() {
		want, prevWant := e.before[p], false
		if i < n {
			want, prevWant = e.newBins()[p], true
		}
		if got[p] != want {
			t.Fatalf("after a kill at swap %d, %s = %q, want %q", n, p, got[p], want)
		}
		prev, err := os.ReadFile(system.PreviousPath(p))
		if prevWant && (err != nil || string(prev) != e.before[p]) {
			t.Fatalf("%s not kept after a kill at swap %d: %v", system.PreviousPath(p), n, err)
		}
	}
	if !JournalExists(e.sys.StagingDir()) {
		t.Fatal("no journal after a kill between swaps")
	}
}

func (e *updateEnv) assertAllNew(t *testing.T) {
	t.Helper()
	if got := snapshot(t, e.tg); !reflect.DeepEqual(got, e.newBins()) {
		t.Fatalf("binaries not all new: %v", got)
	}
	for _, p := range e.tg.all() {
		if _, err := os.Lstat(system.PreviousPath(p)); err == nil {
			t.Fatalf("%s kept after the update was committed", system.PreviousPath(p))
		}
	}
	meta, err := installmeta.Read(e.sys.InstallMeta())
	if err != nil || meta.Version != "v0.2.0" || meta.OwnerUser != ownerMeta.OwnerUser {
		t.Fatalf("install.toml %+v, %v", meta, err)
	}
	if JournalExists(e.sys.StagingDir()) {
		t.Fatal("journal kept after the update was committed")
	}
}

// TestJournalKilledUpdateIsCompleted: killed after each swap, the update is
// completed by Recover (doctor, service start) when the staged release is
// intact: all four binaries new, restarted, checked, then committed. A kill
// after swap 2 leaves the agent and the root helper new, bangerd and banger
// old.
func TestJournalKilledUpdateIsCompleted(t *testing.T) {
	for n := 1; n <= 4; n++ {
		t.Run(fmt.Sprintf("killed after swap %d", n), func(t *testing.T) {
			e := newUpdateEnv(t)
			killedUpdate(t, e, n)
			e.assertMixed(t, n)
			rec, err := Recover(context.Background(), e.opts, e.deps)
			if err != nil {
				t.Fatal(err)
			}
			if !rec.Found || !rec.Completed || rec.Reverted || rec.To != "v0.2.0" || rec.From != "v0.1.0" {
				t.Fatalf("recovery %+v", rec)
			}
			e.assertAllNew(t)
			if got, want := e.svc.Calls(), []string{"restart-helper", "restart-daemon", "wait-ready"}; !reflect.DeepEqual(got, want) {
				t.Fatalf("service calls %v, want %v", got, want)
			}
			if e.doctors != 1 {
				t.Fatalf("doctor ran %d times before the commit, want 1", e.doctors)
			}
			if _, err := os.Stat(e.sys.StagingDir()); err == nil {
				t.Fatal("staging left after the recovery")
			}
		})
	}
}

// TestJournalKilledUpdateIsRevertedWhenStagingAltered: a staged binary
// that no longer matches the journal's hash is never installed: the swap
// is reverted from the .previous files, which survive until then.
func TestJournalKilledUpdateIsRevertedWhenStagingAltered(t *testing.T) {
	for _, name := range []string{HelperName, BangerdName} {
		t.Run(name, func(t *testing.T) {
			e := newUpdateEnv(t)
			killedUpdate(t, e, 1)
			e.assertMixed(t, 1)
			staged := filepath.Join(e.sys.StagingDir(), "release", name)
			if err := os.WriteFile(staged, []byte("#!/bin/sh\necho planted\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			rec, err := Recover(context.Background(), e.opts, e.deps)
			if err != nil {
				t.Fatal(err)
			}
			if !rec.Reverted || rec.Completed || !strings.Contains(rec.Reason, "altered") {
				t.Fatalf("recovery %+v", rec)
			}
			e.assertUntouched(t)
			if got, want := e.svc.Calls(), []string{"restart-helper", "restart-daemon", "wait-ready"}; !reflect.DeepEqual(got, want) {
				t.Fatalf("services not restarted on the restored binaries: %v", got)
			}
			if e.doctors != 0 {
				t.Fatal("doctor ran for a reverted update")
			}
		})
	}
}

// TestJournalCompletedInstallUnhealthyIsReverted: the completed install
// fails the doctor: it is reverted, not committed.
func TestJournalCompletedInstallUnhealthyIsReverted(t *testing.T) {
	e := newUpdateEnv(t)
	killedUpdate(t, e, 2)
	e.svc.doctorFails = true
	rec, err := Recover(context.Background(), e.opts, e.deps)
	if err != nil {
		t.Fatal(err)
	}
	if !rec.Reverted || !strings.Contains(rec.Reason, "not healthy") {
		t.Fatalf("recovery %+v", rec)
	}
	e.assertUntouched(t)
}

// TestJournalKilledDuringRollbackIsReverted: a journal in the rolling-back
// phase is always reverted, whatever staging holds.
func TestJournalKilledDuringRollbackIsReverted(t *testing.T) {
	e := newUpdateEnv(t)
	killedUpdate(t, e, 4)
	path := JournalPath(e.sys.StagingDir())
	var j Journal
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &j) != nil {
		t.Fatalf("read journal: %v", err)
	}
	j.Phase = PhaseRollingBack
	if err := writeJournal(path, &j); err != nil {
		t.Fatal(err)
	}
	// Half rolled back already: banger was restored before the kill.
	if err := system.Rollback(e.tg.Banger); err != nil {
		t.Fatal(err)
	}
	rec, err := Recover(context.Background(), e.opts, e.deps)
	if err != nil || !rec.Reverted {
		t.Fatalf("recovery %+v, %v", rec, err)
	}
	e.assertUntouched(t)
}

// TestJournalNextUpdateCompletesKilledUpdate: the next `banger update`
// replays the journal before anything else and, the interrupted target
// being the one asked for, downloads nothing again.
func TestJournalNextUpdateCompletesKilledUpdate(t *testing.T) {
	e := newUpdateEnv(t)
	killedUpdate(t, e, 2)
	tarball := "/v0.2.0/" + TarballName("v0.2.0")
	hits := e.rs.hitsOf(tarball)
	res, err := Run(context.Background(), e.opts, e.deps)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Installed || !res.Recovery.Completed || res.Build.Version != "v0.2.0" {
		t.Fatalf("result %+v", res)
	}
	if e.rs.hitsOf(tarball) != hits {
		t.Fatal("the release was downloaded again instead of completing the staged one")
	}
	e.assertAllNew(t)
}

// TestJournalNextUpdateRevertsThenUpdates: staging lost (e.g. wiped), the
// next update reverts the interrupted swap, then performs a full update.
func TestJournalNextUpdateRevertsThenUpdates(t *testing.T) {
	e := newUpdateEnv(t)
	killedUpdate(t, e, 1)
	if err := os.RemoveAll(e.sys.StagingDir()); err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), e.opts, e.deps)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Recovery.Reverted || !res.Installed {
		t.Fatalf("result %+v", res)
	}
	e.assertAllNew(t)
}

// TestJournalUntrustedIsRefused: recovery acts as root on what the journal
// says, so a journal that names other files, is a symlink or is writable by
// others is refused with nothing touched, and kept for an operator.
func TestJournalUntrustedIsRefused(t *testing.T) {
	cases := map[string]func(t *testing.T, e *updateEnv, path, sentinel string){
		"target outside the install": func(t *testing.T, e *updateEnv, path, sentinel string) {
			editJournal(t, path, func(j *Journal) { j.Steps[2].Target = sentinel })
		},
		"staged file outside staging": func(t *testing.T, e *updateEnv, path, sentinel string) {
			editJournal(t, path, func(j *Journal) { j.Steps[2].Staged = sentinel })
		},
		"world-writable": func(t *testing.T, e *updateEnv, path, sentinel string) {
			if err := os.Chmod(path, 0o666); err != nil {
				t.Fatal(err)
			}
		},
		"symlink": func(t *testing.T, e *updateEnv, path, sentinel string) {
			real := filepath.Join(filepath.Dir(sentinel), "journal-copy")
			b, _ := os.ReadFile(path)
			if err := os.WriteFile(real, b, 0o600); err != nil {
				t.Fatal(err)
			}
			os.Remove(path)
			if err := os.Symlink(real, path); err != nil {
				t.Fatal(err)
			}
		},
		"unknown phase": func(t *testing.T, e *updateEnv, path, sentinel string) {
			editJournal(t, path, func(j *Journal) { j.Phase = "done" })
		},
	}
	for name, tamper := range cases {
		t.Run(name, func(t *testing.T) {
			e := newUpdateEnv(t)
			killedUpdate(t, e, 2)
			sentinel := filepath.Join(t.TempDir(), "sentinel")
			if err := os.WriteFile(sentinel, []byte("keep me"), 0o644); err != nil {
				t.Fatal(err)
			}
			path := JournalPath(e.sys.StagingDir())
			tamper(t, e, path, sentinel)
			binsBefore := snapshot(t, e.tg)
			_, err := Recover(context.Background(), e.opts, e.deps)
			if !errors.Is(err, ErrBadJournal) {
				t.Fatalf("err = %v, want ErrBadJournal", err)
			}
			assertContent(t, sentinel, "keep me")
			if got := snapshot(t, e.tg); !reflect.DeepEqual(got, binsBefore) {
				t.Fatal("binaries changed on an untrusted journal")
			}
			if _, err := os.Lstat(system.PreviousPath(e.tg.Agent)); err != nil {
				t.Fatal("backup removed on an untrusted journal")
			}
			if _, err := os.Lstat(path); err != nil {
				t.Fatal("untrusted journal removed")
			}
			if calls := e.svc.Calls(); len(calls) != 0 {
				t.Fatalf("services touched: %v", calls)
			}
			// banger update refuses too, before touching anything.
			if _, err := Run(context.Background(), e.opts, e.deps); !errors.Is(err, ErrBadJournal) {
				t.Fatalf("update err = %v, want ErrBadJournal", err)
			}
			if got := snapshot(t, e.tg); !reflect.DeepEqual(got, binsBefore) {
				t.Fatal("update changed binaries over an untrusted journal")
			}
		})
	}
}

func editJournal(t *testing.T, path string, edit func(*Journal)) {
	t.Helper()
	var j Journal
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &j) != nil {
		t.Fatalf("read journal: %v", err)
	}
	edit(&j)
	if err := writeJournal(path, &j); err != nil {
		t.Fatal(err)
	}
}

func TestRecoverWithoutJournalCreatesNothing(t *testing.T) {
	e := newUpdateEnv(t)
	rec, err := Recover(context.Background(), e.opts, e.deps)
	if err != nil || rec.Found {
		t.Fatalf("recovery %+v, %v", rec, err)
	}
	if _, err := os.Lstat(e.sys.StagingDir() + ".lock"); err == nil {
		t.Fatal("lock file created without a journal")
	}
	e.assertUntouched(t)
}

func TestRecoverNeedsRootAndTheLock(t *testing.T) {
	e := newUpdateEnv(t)
	killedUpdate(t, e, 1)
	bins := snapshot(t, e.tg)
	e.deps.Euid = func() int { return 1000 }
	if _, err := Recover(context.Background(), e.opts, e.deps); err == nil || !strings.Contains(err.Error(), "sudo banger doctor") {
		t.Fatalf("err = %v, want a request for root", err)
	}
	e.deps.Euid = func() int { return 0 }
	unlock, err := lockUpdates(e.sys.StagingDir() + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := Recover(context.Background(), e.opts, e.deps)
	unlock()
	if err != nil || !rec.Busy {
		t.Fatalf("recovery under another update's lock: %+v, %v", rec, err)
	}
	if got := snapshot(t, e.tg); !reflect.DeepEqual(got, bins) || !JournalExists(e.sys.StagingDir()) {
		t.Fatal("recovery changed the install without root or the lock")
	}
}

// swapOrder extracts the targets of "swapped X" and "restoring X" progress
// stages, in the order they were reported (each right after its rename).
func swapOrder(events []progress.Event) (swapped, restored []string) {
	for _, ev := range events {
		if rest, ok := strings.CutPrefix(ev.Message, "swapped "); ok {
			swapped = append(swapped, strings.Fields(rest)[0])
		}
		if rest, ok := strings.CutPrefix(ev.Message, "restoring "); ok {
			restored = append(restored, rest)
		}
	}
	return swapped, restored
}

// TestRunRollbackOrderIsReverseOfSwap: after the doctor fails, the targets
// are restored in exactly the reverse of the order they were swapped.
func TestRunRollbackOrderIsReverseOfSwap(t *testing.T) {
	e := newUpdateEnv(t)
	e.svc.doctorFails = true
	var events []progress.Event
	e.deps.Progress = func(ev progress.Event) { events = append(events, ev) }
	if _, err := Run(context.Background(), e.opts, e.deps); !errors.Is(err, ErrRolledBack) {
		t.Fatalf("err = %v", err)
	}
	swapped, restored := swapOrder(events)
	if want := e.tg.all(); !reflect.DeepEqual(swapped, want) {
		t.Fatalf("swap order %v, want %v", swapped, want)
	}
	want := []string{e.tg.Banger, e.tg.Bangerd, e.tg.Helper, e.tg.Agent}
	if !reflect.DeepEqual(restored, want) {
		t.Fatalf("rollback order %v, want the reverse of the swap %v", restored, want)
	}
	e.assertUntouched(t)
}

// TestRunSwapFailureInsideRun: the second swap (the root helper) fails for
// real (its staged file vanished): Run restores the first, touches no service, and leaves
// neither backups nor a journal.
func TestRunSwapFailureInsideRun(t *testing.T) {
	e := newUpdateEnv(t)
	var events []progress.Event
	e.deps.Progress = func(ev progress.Event) { events = append(events, ev) }
	e.deps.AfterSwap = func(n int) {
		if n == 1 {
			os.Remove(filepath.Join(e.sys.StagingDir(), "release", HelperName))
		}
	}
	res, err := Run(context.Background(), e.opts, e.deps)
	if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "swap binaries (1 of 4 done)") {
		t.Fatalf("err = %v, want a rolled-back swap failure", err)
	}
	if !res.RolledBack || res.Installed || len(res.Swapped) != 0 {
		t.Fatalf("result %+v", res)
	}
	if calls := e.svc.Calls(); len(calls) != 0 {
		t.Fatalf("services touched after a failed swap: %v", calls)
	}
	if _, restored := swapOrder(events); !reflect.DeepEqual(restored, []string{e.tg.Agent}) {
		t.Fatalf("restored %v, want only the agent", restored)
	}
	e.assertUntouched(t)
}

// A staging directory others may write to cannot vouch for the staged
// files: the update is reverted, not completed from it.
func TestJournalWritableStagingIsReverted(t *testing.T) {
	e := newUpdateEnv(t)
	killedUpdate(t, e, 1)
	if err := os.Chmod(filepath.Join(e.sys.StagingDir(), "release"), 0o777); err != nil {
		t.Fatal(err)
	}
	rec, err := Recover(context.Background(), e.opts, e.deps)
	if err != nil || !rec.Reverted || !strings.Contains(rec.Reason, "writable") {
		t.Fatalf("recovery %+v, %v", rec, err)
	}
	e.assertUntouched(t)
}

// With nothing new to install, `banger update` still settles a pending
// journal; a dry run refuses to, changing nothing.
func TestJournalSettledWhenNothingToUpdate(t *testing.T) {
	e := newUpdateEnv(t)
	killedUpdate(t, e, 1)
	e.rs.set("/manifest.json", []byte(`{"schema":1,"latest":"v0.1.0","releases":[{"version":"v0.1.0","tarball":"v0.1.0/banger_v0.1.0_linux_amd64.tar.gz","sha256sums":"v0.1.0/SHA256SUMS","signature":"v0.1.0/SHA256SUMS.sig"}]}`))
	mixed := snapshot(t, e.tg)
	dry := e.opts
	dry.DryRun = true
	if _, err := Run(context.Background(), dry, e.deps); err == nil || !strings.Contains(err.Error(), "interrupted update is pending") {
		t.Fatalf("dry run over a pending journal: %v", err)
	}
	if got := snapshot(t, e.tg); !reflect.DeepEqual(got, mixed) || !JournalExists(e.sys.StagingDir()) {
		t.Fatal("dry run changed the install")
	}
	res, err := Run(context.Background(), e.opts, e.deps)
	if err != nil || res.UpdateAvailable || !res.Recovery.Completed {
		t.Fatalf("%+v, %v", res, err)
	}
	e.assertAllNew(t)
}
