package agentclient

import (
	"github.com/bangerdev/banger/internal/guest/guestagent/agenttest"

	"archive/tar"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentserver"
)

// makeTree builds src/ with files, a subdirectory, modes, fixed mtimes and
// two symlinks that point outside the tree.
func makeTree(t *testing.T, base string) (src, secret string) {
	t.Helper()
	secret = filepath.Join(base, "secret.txt")
	agenttest.Must(t, os.WriteFile(secret, []byte("agenttest.Must not be copied"), 0o600))
	src = filepath.Join(base, "src")
	agenttest.Must(t, os.MkdirAll(filepath.Join(src, "sub", "deeper"), 0o755))
	agenttest.Must(t, os.WriteFile(filepath.Join(src, "plain.txt"), []byte("plain"), 0o640))
	agenttest.Must(t, os.WriteFile(filepath.Join(src, "sub", "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	agenttest.Must(t, os.WriteFile(filepath.Join(src, "sub", "deeper", "big.bin"), bytes.Repeat([]byte("0123456789"), 100_000), 0o644))
	agenttest.Must(t, os.Symlink(secret, filepath.Join(src, "abs-link")))
	agenttest.Must(t, os.Symlink("../secret.txt", filepath.Join(src, "sub", "rel-link")))
	agenttest.Must(t, os.Symlink("plain.txt", filepath.Join(src, "inner-link")))
	mt := time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)
	for i, p := range []string{"plain.txt", "sub/run.sh", "sub/deeper/big.bin", "sub/deeper", "sub", "."} {
		ts := mt.Add(time.Duration(i) * time.Hour)
		agenttest.Must(t, os.Chtimes(filepath.Join(src, p), ts, ts))
	}
	agenttest.Must(t, os.Chmod(filepath.Join(src, "sub"), 0o750))
	return src, secret
}

// sameTree checks that got mirrors want: types, modes, mtimes, contents
// and symlink targets (symlinks must be symlinks, never their targets).
func sameTree(t *testing.T, want, got string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		rel, _ := filepath.Rel(want, p)
		gp := filepath.Join(got, rel)
		wi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		gi, err := os.Lstat(gp)
		if err != nil {
			t.Errorf("%s missing in copy: %v", rel, err)
			return nil
		}
		if wi.Mode() != gi.Mode() {
			t.Errorf("%s: mode %v, want %v", rel, gi.Mode(), wi.Mode())
		}
		switch {
		case wi.Mode()&fs.ModeSymlink != 0:
			wt, _ := os.Readlink(p)
			gt, err := os.Readlink(gp)
			if err != nil || gt != wt {
				t.Errorf("%s: link %q (%v), want %q", rel, gt, err, wt)
			}
			return nil
		case wi.Mode().IsRegular():
			wb, _ := os.ReadFile(p)
			gb, _ := os.ReadFile(gp)
			if !bytes.Equal(wb, gb) {
				t.Errorf("%s: content differs", rel)
			}
		}
		if !wi.ModTime().Equal(gi.ModTime()) {
			t.Errorf("%s: mtime %v, want %v", rel, gi.ModTime(), wi.ModTime())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 9 {
		t.Fatalf("walked only %d entries", n)
	}
}

func TestCopyInOut(t *testing.T) {
	forEachTransport(t, agentserver.ServerOptions{}, func(t *testing.T, c *Client) {
		ctx := testCtx(t, 60*time.Second)
		base := t.TempDir()
		src, _ := makeTree(t, base)

		guestDir := filepath.Join(t.TempDir(), "guest", "dest")
		agenttest.Must(t, c.CopyPathIn(ctx, src, guestDir))
		sameTree(t, src, filepath.Join(guestDir, "src"))

		back := filepath.Join(t.TempDir(), "back")
		agenttest.Must(t, c.CopyPathOut(ctx, filepath.Join(guestDir, "src"), back, agentproto.CopyLimits{}))
		sameTree(t, src, filepath.Join(back, "src"))

		// A single file, and a top-level symlink (copied as a link).
		one := t.TempDir()
		agenttest.Must(t, c.CopyPathOut(ctx, filepath.Join(src, "sub", "run.sh"), one, agentproto.CopyLimits{}))
		if fi, err := os.Stat(filepath.Join(one, "run.sh")); err != nil || fi.Mode().Perm() != 0o755 {
			t.Fatalf("single file: %v %v", fi, err)
		}
		agenttest.Must(t, c.CopyPathOut(ctx, filepath.Join(src, "abs-link"), one, agentproto.CopyLimits{}))
		if fi, err := os.Lstat(filepath.Join(one, "abs-link")); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			t.Fatalf("top-level symlink was not copied as a symlink: %v %v", fi, err)
		}

		err := c.CopyOut(ctx, "/no/such/path", &bytes.Buffer{})
		if !errors.Is(err, &agentproto.Error{Code: agentproto.CodeNotFound}) {
			t.Fatalf("copy out of a missing path: %v", err)
		}
		err = c.CopyOut(ctx, "relative/path", &bytes.Buffer{})
		if !errors.Is(err, &agentproto.Error{Code: agentproto.CodeBadRequest}) {
			t.Fatalf("copy out of a relative path: %v", err)
		}
	})
}

func TestCopyInRefusesEscapes(t *testing.T) {
	forEachTransport(t, agentserver.ServerOptions{}, func(t *testing.T, c *Client) {
		ctx := testCtx(t, 60*time.Second)
		for name, archive := range map[string][]byte{
			"dotdot":   agenttest.EvilTar(t, tar.Header{Name: "../escaped", Typeflag: tar.TypeReg, Mode: 0o644}),
			"absolute": agenttest.EvilTar(t, tar.Header{Name: "/tmp/escaped", Typeflag: tar.TypeReg, Mode: 0o644}),
			"through symlink": agenttest.EvilTar(t,
				tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "..", Mode: 0o777},
				tar.Header{Name: "link/escaped", Typeflag: tar.TypeReg, Mode: 0o644}),
			"hardlink out": agenttest.EvilTar(t, tar.Header{Name: "hl", Typeflag: tar.TypeLink, Linkname: "../outside"}),
		} {
			t.Run(name, func(t *testing.T) {
				parent := t.TempDir()
				outside := filepath.Join(parent, "outside")
				agenttest.Must(t, os.WriteFile(outside, []byte("keep"), 0o644))
				dest := filepath.Join(parent, "dest")
				err := c.CopyIn(ctx, dest, "escaped", bytes.NewReader(archive))
				if err == nil {
					t.Fatal("malicious archive accepted")
				}
				if _, err := os.Lstat(filepath.Join(parent, "escaped")); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("a file was written outside the destination (%v)", err)
				}
				if b, _ := os.ReadFile(outside); string(b) != "keep" {
					t.Fatalf("file outside the destination changed: %q", b)
				}
			})
		}
		// Nothing may be read from outside the source either: the symlinked
		// secret must travel as a link only.
		base := t.TempDir()
		src, _ := makeTree(t, base)
		var archive bytes.Buffer
		agenttest.Must(t, c.CopyOut(ctx, src, &archive))
		if bytes.Contains(archive.Bytes(), []byte("agenttest.Must not be copied")) {
			t.Fatal("copy_out followed a symlink out of the source")
		}
	})
}
