package guestsync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentclient"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentserver"
)

// startAgent serves a real agent on a unix socket (the guest side runs in
// this process, so "guest" paths are temp directories).
func startAgent(t testing.TB) *agentclient.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := agentserver.NewServer(agentserver.ServerOptions{})
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("agent did not stop")
		}
	})
	return agentclient.NewClient(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}, slog.New(slog.DiscardHandler))
}

func write(t *testing.T, p, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

// snapshot describes a tree: type, mode, content hash or link target.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out[rel] = "link:" + l
		case fi.IsDir():
			out[rel] = "dir"
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			out[rel] = fi.Mode().Perm().String() + ":" + hex.EncodeToString(h[:8])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameAs(t *testing.T, host, guest string) {
	t.Helper()
	h, g := snapshot(t, host), snapshot(t, guest)
	for k, v := range h {
		if g[k] != v {
			t.Errorf("%s: host %q, guest %q", k, v, g[k])
		}
	}
	for k := range g {
		if _, ok := h[k]; !ok {
			t.Errorf("%s: only in the guest", k)
		}
	}
}

func TestSyncRoundsIncremental(t *testing.T) {
	ctx := context.Background()
	c := startAgent(t)
	host, guest := t.TempDir(), filepath.Join(t.TempDir(), "work")
	write(t, filepath.Join(host, "a.txt"), "alpha", 0o644)
	write(t, filepath.Join(host, "sub", "b.sh"), "#!/bin/sh\n", 0o755)
	write(t, filepath.Join(host, "sub", "deep", "c"), strings.Repeat("c", 100_000), 0o600)
	if err := os.Symlink("../a.txt", filepath.Join(host, "sub", "link")); err != nil {
		t.Fatal(err)
	}

	res, err := Run(ctx, c, host, guest, Options{Delete: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Uploaded != 6 || res.Bytes != 5+10+100_000 {
		t.Errorf("initial round: %+v, want 6 entries and 100015 bytes", res)
	}
	sameAs(t, host, guest)

	// Nothing changed: nothing sent.
	res, err = Run(ctx, c, host, guest, Options{Delete: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Uploaded != 0 || res.Removed != 0 || res.Hashed != 0 {
		t.Errorf("idle round: %+v, want nothing done", res)
	}

	// touch (same content): hashed, not sent. Modify with the same size:
	// hashed and sent. Create, delete, chmod.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(host, "a.txt"), later, later); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(host, "sub", "deep", "c"), strings.Repeat("d", 100_000), 0o600)
	if err := os.Chtimes(filepath.Join(host, "sub", "deep", "c"), later, later); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(host, "new", "n.txt"), "new", 0o644)
	if err := os.RemoveAll(filepath.Join(host, "sub", "b.sh")); err != nil {
		t.Fatal(err)
	}
	res, err = Run(ctx, c, host, guest, Options{Delete: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Hashed != 2 || res.Uploaded != 3 || res.Removed != 1 {
		t.Errorf("change round: %+v, want 2 hashed, 3 uploaded (c, new, new/n.txt), 1 removed", res)
	}
	sameAs(t, host, guest)

	// Without --delete a removed file stays in the guest.
	if err := os.Remove(filepath.Join(host, "a.txt")); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, c, host, guest, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(guest, "a.txt")); err != nil {
		t.Errorf("without delete a.txt should stay in the guest: %v", err)
	}
}

func TestSyncTypeChanges(t *testing.T) {
	ctx := context.Background()
	c := startAgent(t)
	host, guest := t.TempDir(), t.TempDir()
	write(t, filepath.Join(host, "x", "f"), "f", 0o644)
	write(t, filepath.Join(host, "y"), "y", 0o644)
	if _, err := Run(ctx, c, host, guest, Options{}); err != nil {
		t.Fatal(err)
	}
	// x becomes a file, y a directory.
	if err := os.RemoveAll(filepath.Join(host, "x")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(host, "x"), "now a file", 0o644)
	if err := os.Remove(filepath.Join(host, "y")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(host, "y", "g"), "g", 0o644)
	if _, err := Run(ctx, c, host, guest, Options{}); err != nil {
		t.Fatal(err)
	}
	sameAs(t, host, guest)
}

func TestSyncExcludes(t *testing.T) {
	ctx := context.Background()
	c := startAgent(t)
	host, guest := t.TempDir(), t.TempDir()
	write(t, filepath.Join(host, ".gitignore"), "build/\n*.log\n!keep.log\n", 0o644)
	write(t, filepath.Join(host, "build", "out.bin"), "bin", 0o644)
	write(t, filepath.Join(host, "x.log"), "log", 0o644)
	write(t, filepath.Join(host, "keep.log"), "keep", 0o644)
	write(t, filepath.Join(host, "node_modules", "m.js"), "m", 0o644)
	write(t, filepath.Join(host, "src", "main.go"), "package main", 0o644)
	// Guest-only names under excluded patterns survive --delete.
	write(t, filepath.Join(guest, "build", "guest-made"), "g", 0o644)
	write(t, filepath.Join(guest, "node_modules", "installed.js"), "g", 0o644)
	write(t, filepath.Join(guest, "stale.txt"), "g", 0o644)

	if _, err := Run(ctx, c, host, guest, Options{Delete: true, Excludes: []string{"node_modules"}}); err != nil {
		t.Fatal(err)
	}
	got := snapshot(t, guest)
	want := []string{".gitignore", "build", "build/guest-made", "keep.log", "node_modules", "node_modules/installed.js", "src", "src/main.go"}
	keys := make([]string, 0, len(got))
	for k := range got {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, want) {
		t.Errorf("guest has %v, want %v", keys, want)
	}
}

// A guest-side link where the host has a directory (or a file) is
// replaced, never written through: the sentinel it points at is intact.
func TestSyncNeverWritesThroughGuestLinks(t *testing.T) {
	ctx := context.Background()
	c := startAgent(t)
	base := t.TempDir()
	host, guest, outside := filepath.Join(base, "host"), filepath.Join(base, "guest"), filepath.Join(base, "etc")
	write(t, filepath.Join(outside, "passwd"), "sentinel", 0o644)
	write(t, filepath.Join(outside, "shadow"), "sentinel2", 0o600)
	before := snapshot(t, outside)
	write(t, filepath.Join(host, "x", "passwd"), "attacker-controlled?", 0o644)
	write(t, filepath.Join(host, "shadow"), "file", 0o644)
	if err := os.MkdirAll(guest, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(guest, "x")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "shadow"), filepath.Join(guest, "shadow")); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, c, host, guest, Options{Delete: true}); err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, outside)
	if !maps(before, after) {
		t.Fatalf("outside changed: before %v after %v", before, after)
	}
	sameAs(t, host, guest)
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Host-side links are synced as links and never read through: a link to
// a secret outside the host directory sends only its target string.
func TestSyncHostLinksStayLinks(t *testing.T) {
	ctx := context.Background()
	c := startAgent(t)
	base := t.TempDir()
	host, guest := filepath.Join(base, "host"), filepath.Join(base, "guest")
	write(t, filepath.Join(base, "secret"), "top secret", 0o600)
	if err := os.MkdirAll(host, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(base, "secret"), filepath.Join(host, "s")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(base, filepath.Join(host, "d")); err != nil {
		t.Fatal(err)
	}
	// A .gitignore that is a link is not read either.
	if err := os.Symlink(filepath.Join(base, "secret"), filepath.Join(host, ".gitignore")); err != nil {
		t.Fatal(err)
	}
	res, err := Run(ctx, c, host, guest, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bytes != 0 {
		t.Errorf("%d file bytes sent, want 0 (links only)", res.Bytes)
	}
	sameAs(t, host, guest)
}

// fakeAgent answers with a manifest of the test's choosing and records
// what the sync then asks for.
type fakeAgent struct {
	manifest []agentproto.ManifestEntry
	removed  []string
	uploaded []byte
}

func (f *fakeAgent) Manifest(ctx context.Context, req agentproto.ManifestRequest, fn func([]agentproto.ManifestEntry) error) error {
	if req.Paths != nil {
		return nil
	}
	return fn(f.manifest)
}

func (f *fakeAgent) Remove(ctx context.Context, dir string, paths []string) error {
	f.removed = append(f.removed, paths...)
	return nil
}

func (f *fakeAgent) CopyIn(ctx context.Context, dir, name string, r io.Reader) error {
	b, err := io.ReadAll(r)
	f.uploaded = b
	return err
}

// Whatever the guest lists (names the host lacks, files that "differ"),
// the host reads only its own tree: the archive holds no byte of a file
// outside the host directory.
func TestSyncLyingManifestOnlyCausesUploads(t *testing.T) {
	base := t.TempDir()
	host := filepath.Join(base, "host")
	write(t, filepath.Join(base, "secret"), "SECRET-BYTES", 0o600)
	write(t, filepath.Join(host, "a"), "a", 0o644)
	f := &fakeAgent{manifest: []agentproto.ManifestEntry{
		{Path: "a", Type: agentproto.EntryFile, Size: 99},
		{Path: "secret", Type: agentproto.EntryFile, Size: 12},
		{Path: "zz/only-guest", Type: agentproto.EntryFile},
	}}
	res, err := Run(context.Background(), f, host, "/work", Options{Delete: true})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(f.uploaded), "SECRET") {
		t.Fatal("the archive carries a file from outside the host directory")
	}
	if !slices.Equal(f.removed, []string{"secret", "zz/only-guest"}) || res.Uploaded != 1 {
		t.Errorf("removed %v, uploaded %d; want [secret zz/only-guest] and 1", f.removed, res.Uploaded)
	}
}

// A guest directory swapped for a link between the listing and the
// hashing makes the hash request meet the link: the file is sent again
// (replacing the link), not refused, and nothing outside changes.
func TestSyncHashUnderGuestLink(t *testing.T) {
	ctx := context.Background()
	c := startAgent(t)
	base := t.TempDir()
	host, guest, outside := filepath.Join(base, "host"), filepath.Join(base, "guest"), filepath.Join(base, "outside")
	write(t, filepath.Join(host, "d", "f"), "host", 0o644)
	write(t, filepath.Join(outside, "f"), "HOST", 0o644) // same size
	if _, err := Run(ctx, c, host, guest, Options{}); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(host, "d", "f"), later, later); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(guest, "d")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(guest, "d")); err != nil {
		t.Fatal(err)
	}
	// Asked directly for d/f's hash, the guest answers nothing for it.
	got := 0
	err := c.Manifest(ctx, agentproto.ManifestRequest{Dir: guest, Paths: []string{"d/f"}}, func(b []agentproto.ManifestEntry) error {
		got += len(b)
		return nil
	})
	if err != nil || got != 0 {
		t.Fatalf("hash through a link escaping the dir: %d entries, %v", got, err)
	}
	if _, err := Run(ctx, c, host, guest, Options{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(outside, "f")); string(b) != "HOST" {
		t.Fatalf("outside file now %q", b)
	}
	sameAs(t, host, guest)
}
