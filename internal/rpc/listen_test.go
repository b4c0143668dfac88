package rpc

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/bangerdev/banger/internal/system"
)

func TestListenUnixModeOwnerAndCleanup(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.sock")
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		uid, gid = 65534, 65534
	}
	ln, err := ListenUnix(path, ListenOptions{Mode: 0o600, UID: uid, GID: gid})
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Type() != os.ModeSocket || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want socket 0600 (umask 0 must not matter)", st.Mode())
	}
	if uid >= 0 {
		if s := st.Sys().(*syscall.Stat_t); s.Uid != uint32(uid) || s.Gid != uint32(gid) {
			t.Fatalf("socket owned by %d:%d, want %d:%d", s.Uid, s.Gid, uid, gid)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only the socket: %v", len(entries), entries)
	}
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the renamed socket: %v", err)
	}
	c.Close()
	if _, err := ListenUnix(path, ListenOptions{}); err == nil {
		t.Fatal("a second listener on a live socket was accepted")
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after Close: %v", err)
	}
}

func TestListenUnixReplacesStaleSocketButKeepsForeignFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.sock")
	ln, err := ListenUnix(path, ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A dead server's socket file: leave it behind.
	ln.(*unixListener).once.Do(func() { ln.(*unixListener).dir.Close() })
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket missing: %v", err)
	}
	ln2, err := ListenUnix(path, ListenOptions{})
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	// Someone replaced the socket with their own file: Close must not remove it.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln2.Close()
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep" {
		t.Fatalf("Close removed or changed a file it did not bind: %q %v", b, err)
	}
}

func TestListenUnixRootDirRefusesUntrustedDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the trusted directory must be root-owned")
	}
	base := t.TempDir()
	owned := filepath.Join(base, "owned")
	if err := os.Mkdir(owned, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(owned, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(filepath.Join(owned, "h.sock"), ListenOptions{RootDir: true}); !errors.Is(err, system.ErrUntrustedDir) {
		t.Fatalf("listen in a directory another uid owns: %v, want ErrUntrustedDir", err)
	}
	target := filepath.Join(base, "target")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(filepath.Join(link, "h.sock"), ListenOptions{RootDir: true}); !errors.Is(err, system.ErrUntrustedDir) {
		t.Fatalf("listen through a symlinked directory: %v, want ErrUntrustedDir", err)
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Fatalf("something was created through the symlink: %v", entries)
	}
	ln, err := ListenUnix(filepath.Join(base, "run", "h.sock"), ListenOptions{RootDir: true, UID: 65534, GID: -1})
	if err != nil {
		t.Fatalf("listen in a root-owned directory: %v", err)
	}
	defer ln.Close()
	st, err := os.Stat(filepath.Join(base, "run"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("created socket directory: %v %v, want 0755", st, err)
	}
}
