// Package guestsync mirrors a host directory into a guest directory
// through the guest agent, one way and incrementally: the guest lists its
// tree (fs.manifest), the host compares it with its own by type, size,
// mtime, mode and link target, settles files whose size matches but whose
// mtime does not by sha256 on both sides, removes what must go
// (fs.remove) and uploads only what differs as one archive (fs.copy_in,
// with ExtractTar's rules: nothing written outside the directory, nothing
// through a link).
//
// The guest is hostile: its manifest is bounded and checked by the agent
// client, and it only ever decides what is uploaded or removed in the
// guest. What the host reads comes from its own walk of the host
// directory through an os.Root, and symlinks are synced as symlinks.
package guestsync

import (
	"path"
	"slices"
	"strings"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
)

// Tree is one side's entries by path.
type Tree map[string]agentproto.ManifestEntry

// Plan is what one round does.
type Plan struct {
	Upload []string // names to send (files, links, directories), sorted
	Hash   []string // files whose content decides: same size and mode, other mtime
	Remove []string // guest names to delete first (topmost only), sorted
}

// Diff compares the host's tree with the guest's. Excluded names must
// already be left out of both. Guest names missing on the host are
// removed only with del; a guest directory where the host has something
// else is always removed (it cannot be replaced in place).
func Diff(local, remote Tree, del bool) Plan {
	var p Plan
	for name, l := range local {
		r, ok := remote[name]
		switch {
		case !ok:
			p.Upload = append(p.Upload, name)
		case l.Type != r.Type:
			if r.Type == agentproto.EntryDir {
				p.Remove = append(p.Remove, name)
			}
			p.Upload = append(p.Upload, name)
		case l.Type == agentproto.EntrySymlink:
			if l.Link != r.Link {
				p.Upload = append(p.Upload, name)
			}
		case l.Type == agentproto.EntryFile:
			switch {
			case l.Size != r.Size || l.Mode != r.Mode:
				p.Upload = append(p.Upload, name)
			case l.MTime != r.MTime:
				p.Hash = append(p.Hash, name)
			}
		}
		// Directories on both sides: their modes and times are the
		// guest's (ExtractTar keeps an existing directory's).
	}
	if del {
		for name := range remote {
			if _, ok := local[name]; !ok {
				p.Remove = append(p.Remove, name)
			}
		}
	}
	slices.Sort(p.Upload)
	slices.Sort(p.Hash)
	p.Remove = topmost(p.Remove)
	return p
}

// topmost sorts names by path elements and drops those beneath another
// one of the list: in that order everything beneath "a" follows "a"
// directly, so checking against the last kept name is enough.
func topmost(names []string) []string {
	slices.SortFunc(names, comparePaths)
	var out []string
	for _, n := range names {
		if len(out) > 0 && isBeneath(n, out[len(out)-1]) {
			continue
		}
		out = append(out, n)
	}
	return out
}

// isBeneath says whether name is dir or beneath it.
func isBeneath(name, dir string) bool {
	return name == dir || strings.HasPrefix(name, dir+"/")
}

// WithParents adds every ancestor directory of names (so a guest-side link
// in their place is replaced by a real directory before anything is
// written beneath it) and returns them sorted, parents first.
func WithParents(names []string) []string {
	seen := make(map[string]bool, len(names))
	var out []string
	for _, n := range names {
		for d := path.Dir(n); d != "." && !seen[d]; d = path.Dir(d) {
			seen[d] = true
			out = append(out, d)
		}
	}
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	slices.SortFunc(out, comparePaths)
	return out
}

// comparePaths orders by path elements, so "a" < "a/b" < "a.txt" and a
// directory's entries follow it directly.
func comparePaths(a, b string) int {
	return slices.Compare(strings.Split(a, "/"), strings.Split(b, "/"))
}
