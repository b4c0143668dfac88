package system

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestOpenBeneathRefusesSymlinks(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	inside := filepath.Join(base, "inside")
	for _, d := range []string{outside, inside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sentinel := filepath.Join(outside, "sentinel")
	if err := os.WriteFile(sentinel, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(sentinel, filepath.Join(inside, "file")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(inside, "dir")); err != nil {
		t.Fatal(err)
	}
	dir, err := os.Open(inside)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	for _, rel := range []string{"file", "dir/sentinel", "../outside/sentinel"} {
		if f, err := OpenAppendAt(dir, rel, 0o600); err == nil {
			f.Close()
			t.Errorf("OpenAppendAt(%q) followed a symlink or left the directory", rel)
		}
	}
	if _, err := MkdirBeneath(dir, "dir/sub", 0o700, -1, -1); err == nil {
		t.Error("MkdirBeneath went through a symlinked directory")
	}
	if b, _ := os.ReadFile(sentinel); string(b) != "keep" {
		t.Fatalf("sentinel changed: %q", b)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Fatalf("something was created outside: %v", entries)
	}
	f, err := OpenAppendAt(dir, "log", 0o640)
	if err != nil {
		t.Fatalf("plain file: %v", err)
	}
	f.Close()
	if err := os.Link(sentinel, filepath.Join(inside, "hard")); err == nil {
		if f, err := OpenAppendAt(dir, "hard", 0o600); err == nil {
			f.Close()
			t.Error("OpenAppendAt accepted a hard link to a file elsewhere")
		}
	}
}

func TestMkdirBeneathSetsModeAndOwnerByDescriptor(t *testing.T) {
	base := t.TempDir()
	dir, err := os.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		uid, gid = 65534, 65534
	}
	d, err := MkdirBeneath(dir, "a/b", 0o750, uid, gid)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	for _, p := range []string{"a", "a/b"} {
		st, err := os.Lstat(filepath.Join(base, p))
		if err != nil || !st.IsDir() || st.Mode().Perm() != 0o750 {
			t.Fatalf("%s: %v %v, want directory 0750", p, st, err)
		}
		if s := st.Sys().(*syscall.Stat_t); uid >= 0 && (s.Uid != uint32(uid) || s.Gid != uint32(gid)) {
			t.Fatalf("%s owned by %d:%d", p, s.Uid, s.Gid)
		}
	}
}

func TestOpenRootDirRefusesUntrusted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: trusted directories are root-owned")
	}
	base := t.TempDir()
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenRootDir(filepath.Join(open, "x"), true, 0o755); !errors.Is(err, ErrUntrustedDir) {
		t.Fatalf("world-writable ancestor: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(open, "x")); err == nil {
		t.Fatal("created a directory under an untrusted ancestor")
	}
	d, err := OpenRootDir(filepath.Join(base, "made", "deeper"), true, 0o750)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if st, err := os.Stat(filepath.Join(base, "made", "deeper")); err != nil || st.Mode().Perm() != 0o750 {
		t.Fatalf("created dir: %v %v", st, err)
	}
}

func TestWriteFileAtAtomicAndNoFollow(t *testing.T) {
	base := t.TempDir()
	dir, err := os.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	target := filepath.Join(base, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(base, "f")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAt(dir, "f", []byte("new"), 0o640); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Fatalf("write went through the symlink: %q", b)
	}
	st, err := os.Lstat(filepath.Join(base, "f"))
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o640 {
		t.Fatalf("written file: %v %v", st, err)
	}
	if b, _ := os.ReadFile(filepath.Join(base, "f")); string(b) != "new" {
		t.Fatalf("content %q", b)
	}
	if entries, _ := os.ReadDir(base); len(entries) != 2 {
		t.Fatalf("temporary files left: %v", entries)
	}
	if err := WriteFileAt(dir, "../x", nil, 0o600); err == nil {
		t.Fatal("a name with a slash was accepted")
	}
}
