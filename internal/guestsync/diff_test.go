package guestsync

import (
	"slices"
	"testing"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
)

func file(p string, size, mtime int64, mode uint32) agentproto.ManifestEntry {
	return agentproto.ManifestEntry{Path: p, Type: agentproto.EntryFile, Size: size, MTime: mtime, Mode: mode}
}

func dir(p string) agentproto.ManifestEntry {
	return agentproto.ManifestEntry{Path: p, Type: agentproto.EntryDir, Mode: 0o755}
}

func link(p, to string) agentproto.ManifestEntry {
	return agentproto.ManifestEntry{Path: p, Type: agentproto.EntrySymlink, Link: to}
}

func tree(es ...agentproto.ManifestEntry) Tree {
	t := Tree{}
	for _, e := range es {
		t[e.Path] = e
	}
	return t
}

func TestDiff(t *testing.T) {
	for _, tc := range []struct {
		name          string
		local, remote Tree
		del           bool
		want          Plan
	}{
		{"same", tree(file("a", 1, 5, 0o644), dir("d")), tree(file("a", 1, 5, 0o644), dir("d")), true, Plan{}},
		{"new file", tree(file("a", 1, 5, 0o644)), tree(), false, Plan{Upload: []string{"a"}}},
		{"size differs", tree(file("a", 2, 5, 0o644)), tree(file("a", 1, 5, 0o644)), false, Plan{Upload: []string{"a"}}},
		{"mode differs", tree(file("a", 1, 5, 0o755)), tree(file("a", 1, 5, 0o644)), false, Plan{Upload: []string{"a"}}},
		{"mtime differs: hash", tree(file("a", 1, 6, 0o644)), tree(file("a", 1, 5, 0o644)), false, Plan{Hash: []string{"a"}}},
		{"link target", tree(link("l", "x")), tree(link("l", "y")), false, Plan{Upload: []string{"l"}}},
		{"dir mode ignored", tree(dir("d")), tree(agentproto.ManifestEntry{Path: "d", Type: agentproto.EntryDir, Mode: 0o700, MTime: 9}), false, Plan{}},
		{"guest dir where host has a file", tree(file("x", 1, 1, 0o644)), tree(dir("x"), file("x/y", 1, 1, 0o644)), false,
			Plan{Upload: []string{"x"}, Remove: []string{"x"}}},
		{"guest link where host has a dir", tree(dir("x"), file("x/f", 1, 1, 0o644)), tree(link("x", "/etc")), false,
			Plan{Upload: []string{"x", "x/f"}}},
		{"extra kept without delete", tree(), tree(file("old", 1, 1, 0o644)), false, Plan{}},
		{"extra removed topmost", tree(file("a.txt", 1, 1, 0o644)), tree(file("a.txt", 1, 1, 0o644), dir("a"), file("a/b", 1, 1, 0o644), dir("a/c"), file("a/c/d", 1, 1, 0o644), file("z", 1, 1, 0o644)), true,
			Plan{Remove: []string{"a", "z"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Diff(tc.local, tc.remote, tc.del)
			if !slices.Equal(got.Upload, tc.want.Upload) || !slices.Equal(got.Hash, tc.want.Hash) || !slices.Equal(got.Remove, tc.want.Remove) {
				t.Errorf("Diff = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestWithParents(t *testing.T) {
	got := WithParents([]string{"a/b/c", "a.txt", "a/x", "z"})
	want := []string{"a", "a/b", "a/b/c", "a/x", "a.txt", "z"}
	if !slices.Equal(got, want) {
		t.Errorf("WithParents = %v, want %v", got, want)
	}
}

func TestBatches(t *testing.T) {
	var names []string
	for range 3000 {
		names = append(names, string(make([]byte, 200)))
	}
	bs := batches(names)
	n := 0
	for _, b := range bs {
		size := 0
		for _, s := range b {
			size += len(s) + 4
		}
		if size > batchBytes {
			t.Errorf("batch of %d bytes over %d", size, batchBytes)
		}
		n += len(b)
	}
	if n != len(names) || len(bs) < 2 {
		t.Errorf("%d names in %d batches, want %d in several", n, len(bs), len(names))
	}
}
