package agentclient

import (
	"archive/tar"
	"bytes"
	"context"
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
	must(t, os.WriteFile(secret, []byte("must not be copied"), 0o600))
	src = filepath.Join(base, "src")
	must(t, os.MkdirAll(filepath.Join(src, "sub", "deeper"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "plain.txt"), []byte("plain"), 0o640))
	must(t, os.WriteFile(filepath.Join(src, "sub", "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "sub", "deeper", "big.bin"), bytes.Repeat([]byte("0123456789"), 100_000), 0o644))
	must(t, os.Symlink(secret, filepath.Join(src, "abs-link")))
	must(t, os.Symlink("../secret.txt", filepath.Join(src, "sub", "rel-link")))
	must(t, os.Symlink("plain.txt", filepath.Join(src, "inner-link")))
	mt := time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)
	for i, p := range []string{"plain.txt", "sub/run.sh", "sub/deeper/big.bin", "sub/deeper", "sub", "."} {
		ts := mt.Add(time.Duration(i) * time.Hour)
		must(t, os.Chtimes(filepath.Join(src, p), ts, ts))
	}
	must(t, os.Chmod(filepath.Join(src, "sub"), 0o750))
	return src, secret
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
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
		must(t, c.CopyPathIn(ctx, src, guestDir))
		sameTree(t, src, filepath.Join(guestDir, "src"))

		back := filepath.Join(t.TempDir(), "back")
		must(t, c.CopyPathOut(ctx, filepath.Join(guestDir, "src"), back, agentproto.CopyLimits{}))
		sameTree(t, src, filepath.Join(back, "src"))

		// A single file, and a top-level symlink (copied as a link).
		one := t.TempDir()
		must(t, c.CopyPathOut(ctx, filepath.Join(src, "sub", "run.sh"), one, agentproto.CopyLimits{}))
		if fi, err := os.Stat(filepath.Join(one, "run.sh")); err != nil || fi.Mode().Perm() != 0o755 {
			t.Fatalf("single file: %v %v", fi, err)
		}
		must(t, c.CopyPathOut(ctx, filepath.Join(src, "abs-link"), one, agentproto.CopyLimits{}))
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

// evilTar builds an archive from entries in order.
func evilTar(t *testing.T, entries ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		body := []byte("pwned")
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		must(t, tw.WriteHeader(&h))
		if h.Typeflag == tar.TypeReg {
			_, _ = tw.Write(body)
		}
	}
	must(t, tw.Close())
	return buf.Bytes()
}

func TestCopyInRefusesEscapes(t *testing.T) {
	forEachTransport(t, agentserver.ServerOptions{}, func(t *testing.T, c *Client) {
		ctx := testCtx(t, 60*time.Second)
		for name, archive := range map[string][]byte{
			"dotdot":   evilTar(t, tar.Header{Name: "../escaped", Typeflag: tar.TypeReg, Mode: 0o644}),
			"absolute": evilTar(t, tar.Header{Name: "/tmp/escaped", Typeflag: tar.TypeReg, Mode: 0o644}),
			"through symlink": evilTar(t,
				tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "..", Mode: 0o777},
				tar.Header{Name: "link/escaped", Typeflag: tar.TypeReg, Mode: 0o644}),
			"hardlink out": evilTar(t, tar.Header{Name: "hl", Typeflag: tar.TypeLink, Linkname: "../outside"}),
		} {
			t.Run(name, func(t *testing.T) {
				parent := t.TempDir()
				outside := filepath.Join(parent, "outside")
				must(t, os.WriteFile(outside, []byte("keep"), 0o644))
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
		must(t, c.CopyOut(ctx, src, &archive))
		if bytes.Contains(archive.Bytes(), []byte("must not be copied")) {
			t.Fatal("copy_out followed a symlink out of the source")
		}
	})
}

func TestExtractTarLocal(t *testing.T) {
	// The helpers used by the client are the same code; check them directly
	// against a file that turns into a symlink between archive entries.
	dir := t.TempDir()
	archive := evilTar(t,
		tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o600},
		tar.Header{Name: "a", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"},
		tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o600},
	)
	must(t, agentproto.ExtractTar(context.Background(), bytes.NewReader(archive), dir, "a", agentproto.CopyLimits{}))
	fi, err := os.Lstat(filepath.Join(dir, "a"))
	if err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("last entry should replace the link with a file: %v %v", fi, err)
	}
	x := &agentproto.Extractor{Base: "a"}
	if _, err := x.EntryName("a/../../b"); !errors.Is(err, agentproto.ErrUnsafePath) {
		t.Fatalf("entryName accepted an escape: %v", err)
	}
}
