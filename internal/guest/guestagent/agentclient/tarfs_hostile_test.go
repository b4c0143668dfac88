package agentclient

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
)

// The host side of `vm cp NAME:/root/result.txt ~`: the guest's archive is
// hostile. Each case extracts into a home-like directory full of sentinels
// and then compares everything outside the name asked for (and, for a
// refused archive, everything at all) with a snapshot taken before.

// hostileHome makes parent/home with dotfiles, a hooks directory and an
// existing "result" directory, plus parent/outside beside it.
func hostileHome(t *testing.T) (parent, home string) {
	t.Helper()
	parent = t.TempDir()
	home = filepath.Join(parent, "home")
	for _, d := range []struct {
		p    string
		mode fs.FileMode
	}{{"home", 0o755}, {"home/.ssh", 0o700}, {"home/.git/hooks", 0o755}, {"home/result", 0o750}} {
		must(t, os.MkdirAll(filepath.Join(parent, d.p), 0o755))
		must(t, os.Chmod(filepath.Join(parent, d.p), d.mode))
	}
	for _, f := range []struct {
		p    string
		mode fs.FileMode
	}{{"outside", 0o644}, {"home/.bashrc", 0o644}, {"home/.ssh/authorized_keys", 0o600}, {"home/result/keep", 0o640}} {
		must(t, os.WriteFile(filepath.Join(parent, f.p), []byte("sentinel "+f.p), f.mode))
	}
	must(t, os.Symlink(filepath.Join(parent, "outside"), filepath.Join(home, "link-out")))
	must(t, os.Symlink(".ssh", filepath.Join(home, "link-ssh")))
	return parent, home
}

// snapshot maps every path under dir (relative) to its type, mode, size,
// content hash and link target; directory times are left out, since
// creating and undoing an entry touches its parent's.
func snapshot(t *testing.T, dir string) map[string]string {
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

// sameExcept reports every difference between two snapshots outside skip
// (a relative path whose subtree may change; "" for none).
func sameExcept(t *testing.T, before, after map[string]string, skip string) {
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

// tarOf builds an archive; regular files get body unless Size is set (then
// only the header is written: a stream cut short, as a liar would send).
func tarOf(t testing.TB, entries ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		if h.Typeflag == tar.TypeReg && h.Size != 0 {
			must(t, tw.WriteHeader(&h))
			return buf.Bytes()
		}
		body := []byte("pwned " + h.Name)
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1_600_000_000, 0)
		}
		must(t, tw.WriteHeader(&h))
		if h.Typeflag == tar.TypeReg {
			_, err := tw.Write(body)
			must(t, err)
		}
	}
	must(t, tw.Close())
	return buf.Bytes()
}

func reg(name string, mode int64) tar.Header {
	return tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode}
}

func TestExtractTarRefusesHostileArchives(t *testing.T) {
	huge := reg("result.txt", 0o644)
	huge.Size = 1 << 40
	dirs := func(n int) []tar.Header {
		var hs []tar.Header
		for i := range n {
			hs = append(hs, tar.Header{Name: fmt.Sprintf("result/d%d/", i), Typeflag: tar.TypeDir, Mode: 0o755})
		}
		return hs
	}
	cases := []struct {
		name    string
		base    string
		lim     agentproto.CopyLimits
		archive []tar.Header
		want    error
	}{
		{"dotdot", "result.txt", agentproto.CopyLimits{}, []tar.Header{reg("../outside", 0o644)}, agentproto.ErrUnsafePath},
		{"absolute", "result.txt", agentproto.CopyLimits{}, []tar.Header{reg("/tmp/banger-escape", 0o644)}, agentproto.ErrUnsafePath},
		{"other name", "result.txt", agentproto.CopyLimits{}, []tar.Header{reg(".bashrc", 0o644)}, agentproto.ErrUnsafePath},
		{"other name after the asked one", "result.txt", agentproto.CopyLimits{}, []tar.Header{reg("result.txt", 0o644), reg(".ssh/authorized_keys", 0o600)}, agentproto.ErrUnsafePath},
		{"git hook", "result.txt", agentproto.CopyLimits{}, []tar.Header{reg(".git/hooks/pre-commit", 0o755)}, agentproto.ErrUnsafePath},
		{"dotdot beneath base", "result.txt", agentproto.CopyLimits{}, []tar.Header{reg("result.txt/../../.bashrc", 0o644)}, agentproto.ErrUnsafePath},
		{"dotdot back to a sibling", "result.txt", agentproto.CopyLimits{}, []tar.Header{reg("result.txt/../.bashrc", 0o644)}, agentproto.ErrUnsafePath},
		{"prefix is not beneath", "result", agentproto.CopyLimits{}, []tar.Header{reg("result-evil", 0o644)}, agentproto.ErrUnsafePath},
		{"write through own symlink", "new", agentproto.CopyLimits{}, []tar.Header{
			{Name: "new/", Typeflag: tar.TypeDir, Mode: 0o755},
			{Name: "new/ssh", Typeflag: tar.TypeSymlink, Linkname: "../.ssh"},
			reg("new/ssh/authorized_keys", 0o600),
		}, agentproto.ErrUnsafePath},
		{"write through existing symlink", "link-ssh", agentproto.CopyLimits{}, []tar.Header{reg("link-ssh/authorized_keys", 0o600)}, agentproto.ErrUnsafePath},
		{"write through existing symlink out", "link-out", agentproto.CopyLimits{}, []tar.Header{reg("link-out/x", 0o600)}, agentproto.ErrUnsafePath},
		{"hard link outside", "result.txt", agentproto.CopyLimits{}, []tar.Header{{Name: "result.txt", Typeflag: tar.TypeLink, Linkname: "../outside"}}, agentproto.ErrUnsafePath},
		{"hard link to a sibling", "result.txt", agentproto.CopyLimits{}, []tar.Header{{Name: "result.txt", Typeflag: tar.TypeLink, Linkname: ".bashrc"}}, agentproto.ErrUnsafePath},
		{"hard link to an existing file", "result", agentproto.CopyLimits{}, []tar.Header{{Name: "result/k2", Typeflag: tar.TypeLink, Linkname: "result/keep"}}, agentproto.ErrUnsafePath},
		{"char device", "new", agentproto.CopyLimits{}, []tar.Header{reg("new/first", 0o644), {Name: "new/mem", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 1, Mode: 0o666}}, agentproto.ErrUnsafeEntry},
		{"block device", "new", agentproto.CopyLimits{}, []tar.Header{{Name: "new/sda", Typeflag: tar.TypeBlock, Devmajor: 8, Mode: 0o666}}, agentproto.ErrUnsafeEntry},
		{"fifo", "new", agentproto.CopyLimits{}, []tar.Header{{Name: "new/", Typeflag: tar.TypeDir, Mode: 0o755}, {Name: "new/fifo", Typeflag: tar.TypeFifo, Mode: 0o666}}, agentproto.ErrUnsafeEntry},
		{"huge file", "result.txt", agentproto.CopyLimits{}, []tar.Header{huge}, agentproto.ErrArchiveLimit},
		{"over the byte limit", "new", agentproto.CopyLimits{MaxBytes: 20}, []tar.Header{reg("new/a", 0o644), reg("new/b", 0o644)}, agentproto.ErrArchiveLimit},
		{"too many entries", "result", agentproto.CopyLimits{MaxEntries: 3}, dirs(5), agentproto.ErrArchiveLimit},
		{"deep implied directories", "result", agentproto.CopyLimits{MaxEntries: 50}, []tar.Header{reg("result/"+strings.Repeat("d/", 100)+"f", 0o644)}, agentproto.ErrArchiveLimit},
		{"name longer than PATH_MAX", "result", agentproto.CopyLimits{}, []tar.Header{reg("result/"+strings.Repeat("d/", 3000)+"f", 0o644)}, agentproto.ErrUnsafePath},
		{"escape in the name", "result.txt", agentproto.CopyLimits{}, []tar.Header{reg("\x1b]52;c;cHduZWQ=\a\x1b[2J", 0o644)}, agentproto.ErrUnsafePath},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			parent, home := hostileHome(t)
			before := snapshot(t, parent)
			err := agentproto.ExtractTar(context.Background(), bytes.NewReader(tarOf(t, tc.archive...)), home, tc.base, tc.lim)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if strings.ContainsAny(err.Error(), "\x1b\a") {
				t.Errorf("error carries raw control bytes: %q", err.Error())
			}
			if bad := tc.archive[len(tc.archive)-1].Name; tc.want != agentproto.ErrArchiveLimit && len(bad) <= agentproto.MaxEntryName && !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
				t.Errorf("error does not name the entry %q: %v", bad, err)
			}
			// Refused as a whole: nothing anywhere changed, not even beneath
			// the name asked for (what was made before the bad entry is gone).
			sameExcept(t, before, snapshot(t, parent), "")
			if _, err := os.Lstat("/tmp/banger-escape"); err == nil {
				t.Error("/tmp/banger-escape was written")
			}
		})
	}
}

func TestExtractTarRefusalRemovesTheDestinationItMade(t *testing.T) {
	parent, home := hostileHome(t)
	before := snapshot(t, parent)
	dest := filepath.Join(home, "new", "dest")
	archive := tarOf(t, reg("result.txt", 0o644), reg(".bashrc", 0o644))
	if err := agentproto.ExtractTar(context.Background(), bytes.NewReader(archive), dest, "result.txt", agentproto.CopyLimits{}); !errors.Is(err, agentproto.ErrUnsafePath) {
		t.Fatalf("got %v", err)
	}
	sameExcept(t, before, snapshot(t, parent), "")
}

func TestExtractTarAcceptsButDefuses(t *testing.T) {
	t.Run("special bits dropped", func(t *testing.T) {
		parent, home := hostileHome(t)
		before := snapshot(t, parent)
		archive := tarOf(t,
			tar.Header{Name: "new/", Typeflag: tar.TypeDir, Mode: 0o3777},
			reg("new/suid", 0o4755), reg("new/sgid", 0o2755), reg("new/sticky", 0o1644))
		must(t, agentproto.ExtractTar(context.Background(), bytes.NewReader(archive), home, "new", agentproto.CopyLimits{}))
		sameExcept(t, before, snapshot(t, parent), "home/new")
		for name, want := range map[string]fs.FileMode{"new": fs.ModeDir | 0o777, "new/suid": 0o755, "new/sgid": 0o755, "new/sticky": 0o644} {
			fi, err := os.Lstat(filepath.Join(home, name))
			if err != nil || fi.Mode() != want {
				t.Errorf("%s: mode %v (%v), want %v", name, fi.Mode(), err, want)
			}
		}
	})
	t.Run("existing directory keeps its mode", func(t *testing.T) {
		parent, home := hostileHome(t)
		before := snapshot(t, parent)
		archive := tarOf(t, tar.Header{Name: "result/", Typeflag: tar.TypeDir, Mode: 0o777}, reg("result/new", 0o644))
		must(t, agentproto.ExtractTar(context.Background(), bytes.NewReader(archive), home, "result", agentproto.CopyLimits{}))
		after := snapshot(t, parent)
		if after["home/result"] != before["home/result"] {
			t.Errorf("existing directory's mode changed: %s → %s", before["home/result"], after["home/result"])
		}
		if after["home/result/keep"] != before["home/result/keep"] {
			t.Error("existing file beside the copy changed")
		}
		delete(after, "home/result/new")
		sameExcept(t, before, after, "")
	})
	t.Run("existing symlink at the name is replaced, not followed", func(t *testing.T) {
		parent, home := hostileHome(t)
		before := snapshot(t, parent)
		must(t, agentproto.ExtractTar(context.Background(), bytes.NewReader(tarOf(t, reg("link-out", 0o644))), home, "link-out", agentproto.CopyLimits{}))
		sameExcept(t, before, snapshot(t, parent), "home/link-out")
		if fi, err := os.Lstat(filepath.Join(home, "link-out")); err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("link-out: %v %v", fi, err)
		}
	})
	t.Run("symlink entries are stored, never followed", func(t *testing.T) {
		parent, home := hostileHome(t)
		before := snapshot(t, parent)
		archive := tarOf(t,
			tar.Header{Name: "new/", Typeflag: tar.TypeDir, Mode: 0o755},
			tar.Header{Name: "new/l", Typeflag: tar.TypeSymlink, Linkname: "../.bashrc"},
			reg("new/l", 0o644), // replaces the link, does not write .bashrc
			reg("new/f", 0o644),
			tar.Header{Name: "new/h", Typeflag: tar.TypeLink, Linkname: "new/f"})
		must(t, agentproto.ExtractTar(context.Background(), bytes.NewReader(archive), home, "new", agentproto.CopyLimits{}))
		sameExcept(t, before, snapshot(t, parent), "home/new")
	})
}
