// Package agenttest holds the test helpers the guest agent's packages
// share: hostile tar streams, a home directory full of sentinels and a
// snapshot of it to prove that nothing outside changed, a fuzz watchdog.
// Only tests import it.
package agenttest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Must fails the test at once on err.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// EvilTar builds an archive from entries in order.
func EvilTar(t *testing.T, entries ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		body := []byte("pwned")
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		Must(t, tw.WriteHeader(&h))
		if h.Typeflag == tar.TypeReg {
			_, _ = tw.Write(body)
		}
	}
	Must(t, tw.Close())
	return buf.Bytes()
}

// HostileHome makes parent/home with dotfiles, a hooks directory and an
// existing "result" directory, plus parent/outside beside it.
func HostileHome(t *testing.T) (parent, home string) {
	t.Helper()
	parent = t.TempDir()
	home = filepath.Join(parent, "home")
	for _, d := range []struct {
		p    string
		mode fs.FileMode
	}{{"home", 0o755}, {"home/.ssh", 0o700}, {"home/.git/hooks", 0o755}, {"home/result", 0o750}} {
		Must(t, os.MkdirAll(filepath.Join(parent, d.p), 0o755))
		Must(t, os.Chmod(filepath.Join(parent, d.p), d.mode))
	}
	for _, f := range []struct {
		p    string
		mode fs.FileMode
	}{{"outside", 0o644}, {"home/.bashrc", 0o644}, {"home/.ssh/authorized_keys", 0o600}, {"home/result/keep", 0o640}} {
		Must(t, os.WriteFile(filepath.Join(parent, f.p), []byte("sentinel "+f.p), f.mode))
	}
	Must(t, os.Symlink(filepath.Join(parent, "outside"), filepath.Join(home, "link-out")))
	Must(t, os.Symlink(".ssh", filepath.Join(home, "link-ssh")))
	return parent, home
}

// Snapshot maps every path under dir (relative) to its type, mode, size,
// content hash and link target; directory times are left out, since
// creating and undoing an entry touches its parent's.
func Snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		desc := fi.Mode().String()
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %d %x %d", fi.Size(), sha256.Sum256(b), fi.ModTime().UnixNano())
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// SameExcept reports every difference between two snapshots outside skip
// (a relative path whose subtree may change; "" for none).
func SameExcept(t *testing.T, before, after map[string]string, skip string) {
	t.Helper()
	in := func(p string) bool { return skip != "" && (p == skip || strings.HasPrefix(p, skip+"/")) }
	for p, d := range before {
		if in(p) {
			continue
		}
		if after[p] != d {
			t.Errorf("%s changed: %q → %q", p, d, after[p])
		}
	}
	for p, d := range after {
		if _, ok := before[p]; !ok && !in(p) {
			t.Errorf("%s appeared: %q", p, d)
		}
	}
}

// TarOf builds an archive; regular files get body unless Size is set (then
// only the header is written: a stream cut short, as a liar would send).
func TarOf(t testing.TB, entries ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		if h.Typeflag == tar.TypeReg && h.Size != 0 {
			Must(t, tw.WriteHeader(&h))
			return buf.Bytes()
		}
		body := []byte("pwned " + h.Name)
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1_600_000_000, 0)
		}
		Must(t, tw.WriteHeader(&h))
		if h.Typeflag == tar.TypeReg {
			_, err := tw.Write(body)
			Must(t, err)
		}
	}
	Must(t, tw.Close())
	return buf.Bytes()
}

// Reg is a regular file's header.
func Reg(name string, mode int64) tar.Header {
	return tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode}
}

// Watchdog crashes the fuzz worker if one input runs longer than d, so a
// hang is reported (and its input saved) like any other failure instead
// of stalling the run. The caller defers the returned stop.
func Watchdog(d time.Duration) (stop func() bool) {
	return time.AfterFunc(d, func() {
		buf := make([]byte, 1<<20)
		panic(fmt.Sprintf("one fuzz input ran longer than %s:\n%s", d, buf[:runtime.Stack(buf, true)]))
	}).Stop
}
