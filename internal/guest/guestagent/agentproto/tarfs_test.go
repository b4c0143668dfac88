package agentproto

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agenttest"
)

// The host side of `vm cp NAME:/root/result.txt ~`: the guest's archive is
// hostile. Each case extracts into a home-like directory full of sentinels
// and then compares everything outside the name asked for (and, for a
// refused archive, everything at all) with a snapshot taken before.

func TestExtractTarRefusesHostileArchives(t *testing.T) {
	huge := agenttest.Reg("result.txt", 0o644)
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
		lim     CopyLimits
		archive []tar.Header
		want    error
	}{
		{"dotdot", "result.txt", CopyLimits{}, []tar.Header{agenttest.Reg("../outside", 0o644)}, ErrUnsafePath},
		{"absolute", "result.txt", CopyLimits{}, []tar.Header{agenttest.Reg("/tmp/banger-escape", 0o644)}, ErrUnsafePath},
		{"other name", "result.txt", CopyLimits{}, []tar.Header{agenttest.Reg(".bashrc", 0o644)}, ErrUnsafePath},
		{"other name after the asked one", "result.txt", CopyLimits{}, []tar.Header{agenttest.Reg("result.txt", 0o644), agenttest.Reg(".ssh/authorized_keys", 0o600)}, ErrUnsafePath},
		{"git hook", "result.txt", CopyLimits{}, []tar.Header{agenttest.Reg(".git/hooks/pre-commit", 0o755)}, ErrUnsafePath},
		{"dotdot beneath base", "result.txt", CopyLimits{}, []tar.Header{agenttest.Reg("result.txt/../../.bashrc", 0o644)}, ErrUnsafePath},
		{"dotdot back to a sibling", "result.txt", CopyLimits{}, []tar.Header{agenttest.Reg("result.txt/../.bashrc", 0o644)}, ErrUnsafePath},
		{"prefix is not beneath", "result", CopyLimits{}, []tar.Header{agenttest.Reg("result-evil", 0o644)}, ErrUnsafePath},
		{"write through own symlink", "new", CopyLimits{}, []tar.Header{
			{Name: "new/", Typeflag: tar.TypeDir, Mode: 0o755},
			{Name: "new/ssh", Typeflag: tar.TypeSymlink, Linkname: "../.ssh"},
			agenttest.Reg("new/ssh/authorized_keys", 0o600),
		}, ErrUnsafePath},
		{"write through existing symlink", "link-ssh", CopyLimits{}, []tar.Header{agenttest.Reg("link-ssh/authorized_keys", 0o600)}, ErrUnsafePath},
		{"write through existing symlink out", "link-out", CopyLimits{}, []tar.Header{agenttest.Reg("link-out/x", 0o600)}, ErrUnsafePath},
		{"hard link outside", "result.txt", CopyLimits{}, []tar.Header{{Name: "result.txt", Typeflag: tar.TypeLink, Linkname: "../outside"}}, ErrUnsafePath},
		{"hard link to a sibling", "result.txt", CopyLimits{}, []tar.Header{{Name: "result.txt", Typeflag: tar.TypeLink, Linkname: ".bashrc"}}, ErrUnsafePath},
		{"hard link to an existing file", "result", CopyLimits{}, []tar.Header{{Name: "result/k2", Typeflag: tar.TypeLink, Linkname: "result/keep"}}, ErrUnsafePath},
		{"char device", "new", CopyLimits{}, []tar.Header{agenttest.Reg("new/first", 0o644), {Name: "new/mem", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 1, Mode: 0o666}}, ErrUnsafeEntry},
		{"block device", "new", CopyLimits{}, []tar.Header{{Name: "new/sda", Typeflag: tar.TypeBlock, Devmajor: 8, Mode: 0o666}}, ErrUnsafeEntry},
		{"fifo", "new", CopyLimits{}, []tar.Header{{Name: "new/", Typeflag: tar.TypeDir, Mode: 0o755}, {Name: "new/fifo", Typeflag: tar.TypeFifo, Mode: 0o666}}, ErrUnsafeEntry},
		{"huge file", "result.txt", CopyLimits{}, []tar.Header{huge}, ErrArchiveLimit},
		{"over the byte limit", "new", CopyLimits{MaxBytes: 20}, []tar.Header{agenttest.Reg("new/a", 0o644), agenttest.Reg("new/b", 0o644)}, ErrArchiveLimit},
		{"too many entries", "result", CopyLimits{MaxEntries: 3}, dirs(5), ErrArchiveLimit},
		{"deep implied directories", "result", CopyLimits{MaxEntries: 50}, []tar.Header{agenttest.Reg("result/"+strings.Repeat("d/", 100)+"f", 0o644)}, ErrArchiveLimit},
		{"name longer than PATH_MAX", "result", CopyLimits{}, []tar.Header{agenttest.Reg("result/"+strings.Repeat("d/", 3000)+"f", 0o644)}, ErrUnsafePath},
		{"escape in the name", "result.txt", CopyLimits{}, []tar.Header{agenttest.Reg("\x1b]52;c;cHduZWQ=\a\x1b[2J", 0o644)}, ErrUnsafePath},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			parent, home := agenttest.HostileHome(t)
			before := agenttest.Snapshot(t, parent)
			err := ExtractTar(context.Background(), bytes.NewReader(agenttest.TarOf(t, tc.archive...)), home, tc.base, tc.lim)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if strings.ContainsAny(err.Error(), "\x1b\a") {
				t.Errorf("error carries raw control bytes: %q", err.Error())
			}
			if bad := tc.archive[len(tc.archive)-1].Name; tc.want != ErrArchiveLimit && len(bad) <= MaxEntryName && !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
				t.Errorf("error does not name the entry %q: %v", bad, err)
			}
			// Refused as a whole: nothing anywhere changed, not even beneath
			// the name asked for (what was made before the bad entry is gone).
			agenttest.SameExcept(t, before, agenttest.Snapshot(t, parent), "")
			if _, err := os.Lstat("/tmp/banger-escape"); err == nil {
				t.Error("/tmp/banger-escape was written")
			}
		})
	}
}

func TestExtractTarRefusalRemovesTheDestinationItMade(t *testing.T) {
	parent, home := agenttest.HostileHome(t)
	before := agenttest.Snapshot(t, parent)
	dest := filepath.Join(home, "new", "dest")
	archive := agenttest.TarOf(t, agenttest.Reg("result.txt", 0o644), agenttest.Reg(".bashrc", 0o644))
	if err := ExtractTar(context.Background(), bytes.NewReader(archive), dest, "result.txt", CopyLimits{}); !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("got %v", err)
	}
	agenttest.SameExcept(t, before, agenttest.Snapshot(t, parent), "")
}

func TestExtractTarAcceptsButDefuses(t *testing.T) {
	t.Run("special bits dropped", func(t *testing.T) {
		parent, home := agenttest.HostileHome(t)
		before := agenttest.Snapshot(t, parent)
		archive := agenttest.TarOf(t,
			tar.Header{Name: "new/", Typeflag: tar.TypeDir, Mode: 0o3777},
			agenttest.Reg("new/suid", 0o4755), agenttest.Reg("new/sgid", 0o2755), agenttest.Reg("new/sticky", 0o1644))
		agenttest.Must(t, ExtractTar(context.Background(), bytes.NewReader(archive), home, "new", CopyLimits{}))
		agenttest.SameExcept(t, before, agenttest.Snapshot(t, parent), "home/new")
		for name, want := range map[string]fs.FileMode{"new": fs.ModeDir | 0o777, "new/suid": 0o755, "new/sgid": 0o755, "new/sticky": 0o644} {
			fi, err := os.Lstat(filepath.Join(home, name))
			if err != nil || fi.Mode() != want {
				t.Errorf("%s: mode %v (%v), want %v", name, fi.Mode(), err, want)
			}
		}
	})
	t.Run("existing directory keeps its mode", func(t *testing.T) {
		parent, home := agenttest.HostileHome(t)
		before := agenttest.Snapshot(t, parent)
		archive := agenttest.TarOf(t, tar.Header{Name: "result/", Typeflag: tar.TypeDir, Mode: 0o777}, agenttest.Reg("result/new", 0o644))
		agenttest.Must(t, ExtractTar(context.Background(), bytes.NewReader(archive), home, "result", CopyLimits{}))
		after := agenttest.Snapshot(t, parent)
		if after["home/result"] != before["home/result"] {
			t.Errorf("existing directory's mode changed: %s → %s", before["home/result"], after["home/result"])
		}
		if after["home/result/keep"] != before["home/result/keep"] {
			t.Error("existing file beside the copy changed")
		}
		delete(after, "home/result/new")
		agenttest.SameExcept(t, before, after, "")
	})
	t.Run("existing symlink at the name is replaced, not followed", func(t *testing.T) {
		parent, home := agenttest.HostileHome(t)
		before := agenttest.Snapshot(t, parent)
		agenttest.Must(t, ExtractTar(context.Background(), bytes.NewReader(agenttest.TarOf(t, agenttest.Reg("link-out", 0o644))), home, "link-out", CopyLimits{}))
		agenttest.SameExcept(t, before, agenttest.Snapshot(t, parent), "home/link-out")
		if fi, err := os.Lstat(filepath.Join(home, "link-out")); err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("link-out: %v %v", fi, err)
		}
	})
	t.Run("symlink entries are stored, never followed", func(t *testing.T) {
		parent, home := agenttest.HostileHome(t)
		before := agenttest.Snapshot(t, parent)
		archive := agenttest.TarOf(t,
			tar.Header{Name: "new/", Typeflag: tar.TypeDir, Mode: 0o755},
			tar.Header{Name: "new/l", Typeflag: tar.TypeSymlink, Linkname: "../.bashrc"},
			agenttest.Reg("new/l", 0o644), // replaces the link, does not write .bashrc
			agenttest.Reg("new/f", 0o644),
			tar.Header{Name: "new/h", Typeflag: tar.TypeLink, Linkname: "new/f"})
		agenttest.Must(t, ExtractTar(context.Background(), bytes.NewReader(archive), home, "new", CopyLimits{}))
		agenttest.SameExcept(t, before, agenttest.Snapshot(t, parent), "home/new")
	})
}

func TestExtractTarLocal(t *testing.T) {
	// The helpers used by the client are the same code; check them directly
	// against a file that turns into a symlink between archive entries.
	dir := t.TempDir()
	archive := agenttest.EvilTar(t,
		tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o600},
		tar.Header{Name: "a", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"},
		tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o600},
	)
	agenttest.Must(t, ExtractTar(context.Background(), bytes.NewReader(archive), dir, "a", CopyLimits{}))
	fi, err := os.Lstat(filepath.Join(dir, "a"))
	if err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("last entry should replace the link with a file: %v %v", fi, err)
	}
	x := &extractor{base: "a"}
	if _, err := x.entryName("a/../../b"); !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("entryName accepted an escape: %v", err)
	}
}

// FuzzExtractTar extracts hostile archives (what a guest sends for `vm cp
// NAME:path ~`) into a home full of sentinels and symlinks pointing out of
// it. No panic; nothing outside home/result changes, whatever happens; a
// refused archive leaves no new name under home/result either; nothing
// extracted is set-uid, set-gid or sticky.
func FuzzExtractTar(f *testing.F) {
	dir := func(name string) tar.Header { return tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755} }
	for _, hs := range [][]tar.Header{
		{dir("result/"), agenttest.Reg("result/a.txt", 0o644), agenttest.Reg("result/sub/b", 0o4755)},
		{agenttest.Reg("result", 0o600)},
		{agenttest.Reg("../outside", 0o644)},
		{agenttest.Reg("/etc/passwd", 0o644)},
		{agenttest.Reg("result/../../outside", 0o644)},
		{dir("result"), {Name: "result/esc", Typeflag: tar.TypeSymlink, Linkname: "../../outside"}, agenttest.Reg("result/esc", 0o644)},
		{agenttest.Reg("link-out", 0o644)},
		{agenttest.Reg("result/link", 0o644), {Name: "result/hard", Typeflag: tar.TypeLink, Linkname: "/etc/shadow"}},
		{{Name: "result/dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}},
		{{Name: "result", Typeflag: tar.TypeSymlink, Linkname: ".ssh"}, agenttest.Reg("result/authorized_keys", 0o600)},
		{dir("result/"), agenttest.Reg("result/keep", 0o644), agenttest.Reg("result/x", 0o644), {Name: "result/cut", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 30}},
	} {
		f.Add(agenttest.TarOf(f, hs...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		defer agenttest.Watchdog(10 * time.Second)()
		parent, home := agenttest.HostileHome(t)
		before := agenttest.Snapshot(t, parent)
		err := ExtractTar(context.Background(), bytes.NewReader(data), home, "result", CopyLimits{MaxBytes: 1 << 20, MaxEntries: 256})
		after := agenttest.Snapshot(t, parent)
		agenttest.SameExcept(t, before, after, "home/result")
		for p, d := range after {
			if !strings.HasPrefix(p, "home/result") {
				continue
			}
			if err != nil {
				if _, ok := before[p]; !ok {
					t.Errorf("refused archive (%v) left %s behind: %s", err, p, d)
				}
			}
			if fi, lerr := os.Lstat(filepath.Join(parent, p)); lerr == nil && fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
				t.Errorf("%s extracted with mode %s", p, fi.Mode())
			}
		}
	})
}
