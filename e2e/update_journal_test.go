package e2e

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/supervisor"
	"github.com/bangerdev/banger/internal/system"
	"github.com/bangerdev/banger/internal/updater"
)

// An update SIGKILLed right after swap N (the hidden --test-kill-after-swap
// flag kills the process at that named step, once the swap is journalled)
// leaves two versions' binaries and a journal. The next `banger update`,
// `banger doctor` or service start (`banger daemon start` through the
// supervisor) completes or reverts it; the three installed binaries are
// then all of one version, by hash, and the .previous backups are kept
// until that moment.

// journalHashes is the SHA-256 of each installed binary, by path.
type journalHashes map[string]string

func (s *sysInstall) journalInstalled() journalHashes {
	s.t.Helper()
	out := journalHashes{}
	for p, b := range s.binaries() {
		sum := sha256.Sum256(b)
		out[p] = hex.EncodeToString(sum[:])
	}
	return out
}

// journalRelease hashes the binaries of a served release's tarball, keyed
// by the install path each one replaces.
func (s *sysInstall) journalRelease(version string) journalHashes {
	s.t.Helper()
	f, err := os.Open(filepath.Join(binDir, "releases", version, updater.TarballName(version)))
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		s.t.Fatal(err)
	}
	byName := map[string]string{
		updater.BangerName: s.sys.BangerBin(), updater.BangerdName: s.sys.BangerdBin(), updater.AgentName: s.sys.AgentBin(),
		updater.HelperName: s.sys.HelperBin(),
	}
	out := journalHashes{}
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			s.t.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.Copy(h, tr); err != nil {
			s.t.Fatal(err)
		}
		out[byName[hdr.Name]] = hex.EncodeToString(h.Sum(nil))
	}
	if len(out) != 4 {
		s.t.Fatalf("release %s has %d binaries", version, len(out))
	}
	return out
}

// journalSwapOrder is the updater's swap order.
func (s *sysInstall) journalSwapOrder() []string {
	return []string{s.sys.AgentBin(), s.sys.HelperBin(), s.sys.BangerdBin(), s.sys.BangerBin()}
}

// journalKill runs `banger update --yes` to v0.smoke.0, SIGKILLed after
// swap n, and checks the mixed state it leaves: the first n binaries new
// with their old version kept as .previous, the rest old, and a journal.
func (s *sysInstall) journalKill(n int, oldH, newH journalHashes) {
	s.t.Helper()
	out, errOut, code := s.update("--yes", "--test-kill-after-swap", fmt.Sprint(n))
	if code != -1 { // killed by a signal
		s.t.Fatalf("update killed after swap %d: exit %d\n%s%s", n, code, out, errOut)
	}
	got := s.journalInstalled()
	for i, p := range s.journalSwapOrder() {
		want := oldH[p]
		if i < n {
			want = newH[p]
			b, err := os.ReadFile(system.PreviousPath(p))
			if sum := sha256.Sum256(b); err != nil || hex.EncodeToString(sum[:]) != oldH[p] {
				s.t.Fatalf("after a kill at swap %d, %s does not hold the old binary: %v", n, system.PreviousPath(p), err)
			}
		}
		if got[p] != want {
			s.t.Fatalf("after a kill at swap %d, %s has hash %s, want %s", n, p, got[p], want)
		}
	}
	if !updater.JournalExists(s.sys.StagingDir()) {
		s.t.Fatalf("no journal after a kill at swap %d", n)
	}
}

// journalRequireVersion checks that the three installed binaries are
// exactly want, no backup or journal is left, install.toml names version
// and the running daemon is that version.
func (s *sysInstall) journalRequireVersion(want journalHashes, version string) {
	s.t.Helper()
	if got := s.journalInstalled(); fmt.Sprint(got) != fmt.Sprint(want) {
		s.t.Fatalf("installed binaries %v, want all of %s: %v", got, version, want)
	}
	s.requireNoBackups()
	if updater.JournalExists(s.sys.StagingDir()) {
		s.t.Fatal("journal left after the recovery")
	}
	if m := s.meta(); m.Version != version {
		s.t.Fatalf("install.toml says %s, want %s", m.Version, version)
	}
	if v := s.versions(); v.Client.Version != version || v.Daemon == nil || v.Daemon.Version != version {
		s.t.Fatalf("running versions %+v, want %s", v, version)
	}
}

type journalDoctorReport struct {
	Checks []struct{ Name, Status, Detail string }
}

// journalDoctor runs the installed `banger doctor --json` as root and
// returns its checks by name.
func (s *sysInstall) journalDoctor() map[string]struct{ Status, Detail string } {
	s.t.Helper()
	out, errOut, code := s.banger("doctor", "--json")
	var rep journalDoctorReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || (code != 0 && code != 1) {
		s.t.Fatalf("doctor --json: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	checks := map[string]struct{ Status, Detail string }{}
	for _, c := range rep.Checks {
		checks[c.Name] = struct{ Status, Detail string }{c.Status, c.Detail}
	}
	return checks
}

func TestUpdateJournalNextUpdateCompletes(t *testing.T) {
	s := installSystem(t)
	oldH, newH := s.journalInstalled(), s.journalRelease(smokeGood)
	s.journalKill(2, oldH, newH)
	out, errOut, code := s.update("--yes")
	if code != 0 || !strings.Contains(out, "completed the interrupted update v0.0.0-e2e → "+smokeGood) {
		t.Fatalf("update after a kill: exit %d\n%s%s", code, out, errOut)
	}
	s.journalRequireVersion(newH, smokeGood)
}

func TestUpdateJournalDoctorCompletes(t *testing.T) {
	s := installSystem(t)
	oldH, newH := s.journalInstalled(), s.journalRelease(smokeGood)
	s.journalKill(1, oldH, newH)
	c, ok := s.journalDoctor()["update journal"]
	if !ok || c.Status != "ok" || !strings.Contains(c.Detail, "completed the interrupted update") {
		t.Fatalf("doctor's update journal check: %+v (present %v)", c, ok)
	}
	s.journalRequireVersion(newH, smokeGood)
}

// The staged bangerd is altered after the kill: it must never be
// installed; doctor reverts to the old binaries from the .previous files.
func TestUpdateJournalDoctorRevertsAlteredStaging(t *testing.T) {
	s := installSystem(t)
	oldH, newH := s.journalInstalled(), s.journalRelease(smokeGood)
	s.journalKill(1, oldH, newH)
	staged := filepath.Join(s.sys.StagingDir(), "release", updater.BangerdName)
	if err := os.WriteFile(staged, []byte("#!/bin/sh\necho planted >&2\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c, ok := s.journalDoctor()["update journal"]
	if !ok || c.Status != "ok" || !strings.Contains(c.Detail, "reverted the interrupted update") || !strings.Contains(c.Detail, "altered") {
		t.Fatalf("doctor's update journal check: %+v (present %v)", c, ok)
	}
	s.journalRequireVersion(oldH, "v0.0.0-e2e")
}

// Service start: the services are stopped after the kill (as after a
// reboot), and `banger daemon start` completes the update before it starts
// them, so they start on one version.
func TestUpdateJournalServiceStartCompletes(t *testing.T) {
	s := installSystem(t)
	oldH, newH := s.journalInstalled(), s.journalRelease(smokeGood)
	s.journalKill(3, oldH, newH)
	sup := &supervisor.Supervisor{System: s.sys, Owner: s.meta()}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sup.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if sup.DaemonPID() != 0 || sup.HelperPID() != 0 {
		t.Fatal("services still running after stop")
	}
	out, errOut, code := s.banger("daemon", "start")
	if code != 0 {
		t.Fatalf("daemon start after a killed update: exit %d\n%s%s", code, out, errOut)
	}
	s.journalRequireVersion(newH, smokeGood)
	if h := sup.HelperPID(); h == 0 {
		t.Fatal("root helper not running after the service start")
	}
}
