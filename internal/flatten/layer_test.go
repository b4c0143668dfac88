package flatten

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// ent describes one tar entry for building test layers.
type ent struct {
	name   string
	typ    byte // tar.Type*; 0 means regular file
	body   string
	link   string
	mode   int64
	uid    int
	gid    int
	xattrs map[string]string
	size   int64 // overrides len(body) in the header (body is then not written)
	major  int64
}

var testMtime = time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)

// layerTar builds a tar stream. Entries that cannot be written completely
// (a size override) end the stream right after their header.
func layerTar(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Linkname: e.link, Mode: mode, Uid: e.uid, Gid: e.gid,
			ModTime: testMtime, Devmajor: e.major, Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if e.size != 0 {
			h.Size = e.size
			if err := tw.WriteHeader(h); err != nil {
				t.Fatalf("write header %q: %v", e.name, err)
			}
			return buf.Bytes()
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("write header %q: %v", e.name, err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// applyLayers extracts layers into root with opts, returning the result
// or the first error.
func applyLayers(root string, opts Options, layers ...[]byte) (*Result, error) {
	a, err := New(root, opts)
	if err != nil {
		return nil, err
	}
	for i, l := range layers {
		if err := a.Apply(context.Background(), bytes.NewReader(l)); err != nil {
			a.Close()
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return a.Finish()
}

// snapshot fingerprints every path under dir except skip (the extraction
// root), so tests can prove nothing outside the root changed.
func snapshot(t testing.TB, dir, skip string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == skip {
			return filepath.SkipDir
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		fp := fmt.Sprintf("%v %d %d", info.Mode(), info.Size(), info.ModTime().UnixNano())
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fp += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			l, _ := os.Readlink(p)
			fp += " -> " + l
		}
		out[p] = fp
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameSnapshot(t testing.TB, before, after map[string]string) {
	t.Helper()
	var diffs []string
	for k, v := range before {
		if after[k] != v {
			diffs = append(diffs, fmt.Sprintf("changed %s: %q -> %q", k, v, after[k]))
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			diffs = append(diffs, "created "+k)
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		t.Fatalf("outside the root changed:\n%s", strings.Join(diffs, "\n"))
	}
}

// sandbox makes base/{root,outside/sentinel} and returns the three paths.
func sandbox(t testing.TB, base string) (root, outside, sentinel string) {
	t.Helper()
	root = filepath.Join(base, "root")
	outside = filepath.Join(base, "outside")
	sentinel = filepath.Join(outside, "sentinel")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(outside, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sentinel, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root, outside, sentinel
}
