package system

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAtomicReplaceKeepsPreviousAndRollsBack(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "bangerd")
	src := filepath.Join(dir, "staged")
	writeFile(t, dst, "old", 0o755)
	writeFile(t, src, "new", 0o755)

	if err := AtomicReplace(src, dst); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, dst); got != "new" {
		t.Fatalf("dst = %q, want new", got)
	}
	if got := readFile(t, PreviousPath(dst)); got != "old" {
		t.Fatalf("previous = %q, want old", got)
	}
	st, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o755 {
		t.Fatalf("mode = %v, want 0755", st.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Fatalf("directory holds %d entries, want dst, dst.previous and src (no temporary files)", len(entries))
	}

	if err := Rollback(dst); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, dst); got != "old" {
		t.Fatalf("after rollback dst = %q, want old", got)
	}
	if _, err := os.Stat(PreviousPath(dst)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("previous still present after rollback: %v", err)
	}
	if err := Rollback(dst); !errors.Is(err, ErrNoBackup) {
		t.Fatalf("second rollback: %v, want ErrNoBackup", err)
	}
}

func TestAtomicReplaceReplacesStaleBackup(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "banger")
	src := filepath.Join(dir, "staged")
	writeFile(t, dst, "current", 0o755)
	writeFile(t, PreviousPath(dst), "stale", 0o755)
	writeFile(t, src, "next", 0o755)
	if err := AtomicReplace(src, dst); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, PreviousPath(dst)); got != "current" {
		t.Fatalf("previous = %q, want current", got)
	}
}

func TestAtomicReplaceNonDirectoryParentFails(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "lib")
	writeFile(t, blocker, "not a directory", 0o644)
	src := filepath.Join(dir, "staged")
	writeFile(t, src, "new", 0o755)
	if err := AtomicReplace(src, filepath.Join(blocker, "agent")); err == nil {
		t.Fatal("replace under a non-directory parent succeeded")
	}
	if got := readFile(t, blocker); got != "not a directory" {
		t.Fatalf("blocker changed: %q", got)
	}
}

func TestAtomicReplaceRefusesNonRegularDestination(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "staged")
	writeFile(t, src, "new", 0o755)
	target := filepath.Join(dir, "real")
	writeFile(t, target, "real", 0o644)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := AtomicReplace(src, link); err == nil {
		t.Fatal("replacing a symlink succeeded")
	}
	if got := readFile(t, target); got != "real" {
		t.Fatalf("symlink target changed: %q", got)
	}
}

func TestWriteFileAtomicAndCopy(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "etc", "banger", "install.toml")
	if err := WriteFileAtomic(p, []byte("a = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("a = 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, p); got != "a = 2\n" {
		t.Fatalf("content = %q", got)
	}
	src := filepath.Join(dir, "bin")
	writeFile(t, src, "binary", 0o600)
	dst := filepath.Join(dir, "usr", "local", "bin", "banger")
	if err := CopyFileAtomic(src, dst, 0o755); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o755 || readFile(t, dst) != "binary" {
		t.Fatalf("copy: mode %v content %q", st.Mode().Perm(), readFile(t, dst))
	}
	if err := CopyFileAtomic(filepath.Join(dir, "missing"), dst, 0o755); err == nil {
		t.Fatal("copy of a missing source succeeded")
	}
	if err := RemoveBackup(dst); err != nil {
		t.Fatalf("removing an absent backup: %v", err)
	}
}
