package updater

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/system"
)

// installTree creates an installed banger under a scratch root with the
// given binary contents.
func installTree(t *testing.T, root, banger, bangerd, agent, helper string) Targets {
	t.Helper()
	tg := InstallTargets(paths.System{Root: root})
	for p, c := range map[string]string{tg.Banger: banger, tg.Bangerd: bangerd, tg.Agent: agent, tg.Helper: helper} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(c), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return tg
}

func stageBins(t *testing.T, banger, bangerd, agent, helper string) StagedRelease {
	t.Helper()
	sr, err := StageTarball(writeTarball(t, releaseBins(banger, bangerd, agent, helper)), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return sr
}

func assertContent(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Fatalf("%s = %q, want %q", path, b, want)
	}
}

func TestInstallTargets(t *testing.T) {
	tg := InstallTargets(paths.System{Root: "/"})
	if tg.Banger != "/usr/local/bin/banger" || tg.Bangerd != "/usr/local/bin/bangerd" || tg.Agent != "/usr/local/lib/banger/banger-vsock-agent" ||
		tg.Helper != "/usr/local/lib/banger/banger-helper" {
		t.Fatalf("targets %+v", tg)
	}
}

func TestSwapAllThenRollback(t *testing.T) {
	root := t.TempDir()
	tg := installTree(t, root, "old-cli", "old-daemon", "old-agent", "old-helper")
	res, err := Swap(stageBins(t, "new-cli", "new-daemon", "new-agent", "new-helper"), tg)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{tg.Agent, tg.Helper, tg.Bangerd, tg.Banger}
	if len(res.SwappedTargets) != 4 {
		t.Fatalf("swapped %v, want %v", res.SwappedTargets, want)
	}
	for i := range want {
		if res.SwappedTargets[i] != want[i] {
			t.Fatalf("swap order %v, want %v", res.SwappedTargets, want)
		}
	}
	assertContent(t, tg.Banger, "new-cli")
	assertContent(t, tg.Bangerd, "new-daemon")
	assertContent(t, tg.Agent, "new-agent")
	assertContent(t, tg.Helper, "new-helper")
	assertContent(t, system.PreviousPath(tg.Banger), "old-cli")
	assertContent(t, system.PreviousPath(tg.Helper), "old-helper")
	assertContent(t, system.PreviousPath(tg.Bangerd), "old-daemon")
	assertContent(t, system.PreviousPath(tg.Agent), "old-agent")
	for _, p := range want {
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o755 {
			t.Fatalf("%s mode %v", p, st.Mode().Perm())
		}
	}

	if err := Rollback(res); err != nil {
		t.Fatal(err)
	}
	assertContent(t, tg.Banger, "old-cli")
	assertContent(t, tg.Bangerd, "old-daemon")
	assertContent(t, tg.Agent, "old-agent")
	assertContent(t, tg.Helper, "old-helper")
}

func TestSwapThenCleanupBackups(t *testing.T) {
	tg := installTree(t, t.TempDir(), "old-cli", "old-daemon", "old-agent", "old-helper")
	if _, err := Swap(stageBins(t, "new-cli", "new-daemon", "new-agent", "new-helper"), tg); err != nil {
		t.Fatal(err)
	}
	if err := CleanupBackups(tg); err != nil {
		t.Fatal(err)
	}
	for _, p := range tg.all() {
		if _, err := os.Stat(system.PreviousPath(p)); !os.IsNotExist(err) {
			t.Fatalf("%s.previous survived cleanup: %v", p, err)
		}
	}
	assertContent(t, tg.Banger, "new-cli")
}

// TestSwapPartialFailureRollsBackThree blocks the fourth swap (banger) by
// making its parent a regular file: three targets are swapped, and rolling
// back restores all three.
func TestSwapPartialFailureRollsBackThree(t *testing.T) {
	root := t.TempDir()
	tg := installTree(t, root, "old-cli", "old-daemon", "old-agent", "old-helper")
	blocker := filepath.Join(root, "blocked")
	if err := os.WriteFile(blocker, []byte("file, not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	tg.Banger = filepath.Join(blocker, "banger")

	res, err := Swap(stageBins(t, "new-cli", "new-daemon", "new-agent", "new-helper"), tg)
	if err == nil {
		t.Fatal("swap through a non-directory parent succeeded")
	}
	if len(res.SwappedTargets) != 3 {
		t.Fatalf("SwappedTargets = %v, want 3 entries", res.SwappedTargets)
	}
	assertContent(t, tg.Agent, "new-agent")
	assertContent(t, tg.Helper, "new-helper")
	assertContent(t, tg.Bangerd, "new-daemon")

	if err := Rollback(res); err != nil {
		t.Fatal(err)
	}
	assertContent(t, tg.Agent, "old-agent")
	assertContent(t, tg.Helper, "old-helper")
	assertContent(t, tg.Bangerd, "old-daemon")
	assertContent(t, blocker, "file, not a directory")
}

func TestRollbackJoinsErrors(t *testing.T) {
	dir := t.TempDir()
	res := SwapResult{SwappedTargets: []string{filepath.Join(dir, "a"), filepath.Join(dir, "b")}}
	err := Rollback(res)
	if err == nil {
		t.Fatal("rollback without backups succeeded")
	}
	if !containsAll(err.Error(), filepath.Join(dir, "a"), filepath.Join(dir, "b")) {
		t.Fatalf("rollback error does not name both targets: %v", err)
	}
}
