package agentclient

import (
	"github.com/bangerdev/banger/internal/guest/guestagent/agenttest"

	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentserver"
)

// hostileManifest is a compromised guest answering fs.manifest with the
// frames serve writes.
func hostileManifest(t *testing.T, serve func(st *agentproto.Stream)) *Client {
	return hostileMethod(t, agentproto.MethodManifest, serve)
}

func TestManifestFromHostileAgent(t *testing.T) {
	one := func(es ...agentproto.ManifestEntry) func(st *agentproto.Stream) {
		return func(st *agentproto.Stream) {
			_ = st.WriteJSONFrame(agentproto.FrameManifest, es)
			_ = st.WriteFrame(agentproto.FrameEOF, nil)
		}
	}
	for _, tc := range []struct {
		name  string
		serve func(st *agentproto.Stream)
	}{
		{"dotdot", one(agentproto.ManifestEntry{Path: "../../etc/passwd", Type: agentproto.EntryFile})},
		{"inner dotdot", one(agentproto.ManifestEntry{Path: "a/../../b", Type: agentproto.EntryFile})},
		{"absolute", one(agentproto.ManifestEntry{Path: "/etc/passwd", Type: agentproto.EntryFile})},
		{"dot", one(agentproto.ManifestEntry{Path: ".", Type: agentproto.EntryDir})},
		{"unclean", one(agentproto.ManifestEntry{Path: "a//b", Type: agentproto.EntryFile})},
		{"nul", one(agentproto.ManifestEntry{Path: "a\x00b", Type: agentproto.EntryFile})},
		{"long", one(agentproto.ManifestEntry{Path: strings.Repeat("a/", 3000) + "b", Type: agentproto.EntryFile})},
		{"type", one(agentproto.ManifestEntry{Path: "a", Type: "c"})},
		{"negative size", one(agentproto.ManifestEntry{Path: "a", Type: agentproto.EntryFile, Size: -1})},
		{"bad hash", one(agentproto.ManifestEntry{Path: "a", Type: agentproto.EntryFile, SHA256: "zz"})},
		{"long link", one(agentproto.ManifestEntry{Path: "a", Type: agentproto.EntrySymlink, Link: strings.Repeat("x", 5000)})},
		{"garbage", func(st *agentproto.Stream) { _ = st.WriteFrame(agentproto.FrameManifest, []byte("{not json")) }},
		{"endless", func(st *agentproto.Stream) {
			batch := make([]agentproto.ManifestEntry, 1000)
			for i := range batch {
				batch[i] = agentproto.ManifestEntry{Path: "f", Type: agentproto.EntryFile}
			}
			for range 100 { // bounded: the client stops after 10
				if st.WriteJSONFrame(agentproto.FrameManifest, batch) != nil {
					return
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := hostileManifest(t, tc.serve)
			seen := 0
			err := c.Manifest(context.Background(), agentproto.ManifestRequest{Dir: "/x", MaxEntries: 10_000}, func(b []agentproto.ManifestEntry) error {
				seen += len(b)
				return nil
			})
			if !errors.Is(err, agentproto.ErrBadManifest) {
				t.Fatalf("err = %v, want ErrBadManifest", err)
			}
			if seen > 10_000 {
				t.Errorf("%d entries passed on, over the limit", seen)
			}
		})
	}
}

func TestManifestAndRemove(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			ctx := context.Background()
			c := tr.start(t, newTestServer(agentserver.ServerOptions{}))
			base := t.TempDir()
			dir := filepath.Join(base, "dir")
			agenttest.Must(t, os.MkdirAll(filepath.Join(dir, "sub"), 0o755))
			agenttest.Must(t, os.WriteFile(filepath.Join(dir, "sub", "f"), []byte("hello"), 0o640))
			agenttest.Must(t, os.WriteFile(filepath.Join(base, "sentinel"), []byte("keep"), 0o644))
			agenttest.Must(t, os.Symlink(base, filepath.Join(dir, "out")))

			got := map[string]agentproto.ManifestEntry{}
			collect := func(b []agentproto.ManifestEntry) error {
				for _, e := range b {
					got[e.Path] = e
				}
				return nil
			}
			agenttest.Must(t, c.Manifest(ctx, agentproto.ManifestRequest{Dir: dir}, collect))
			if len(got) != 3 || got["sub/f"].Size != 5 || got["sub/f"].Mode != 0o640 || got["sub/f"].SHA256 != "" ||
				got["out"].Type != agentproto.EntrySymlink || got["out"].Link != base || got["sub"].Type != agentproto.EntryDir {
				t.Fatalf("manifest = %+v", got)
			}
			clear(got)
			agenttest.Must(t, c.Manifest(ctx, agentproto.ManifestRequest{Dir: dir, Paths: []string{"sub/f", "missing"}}, collect))
			if got["sub/f"].SHA256 != "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" || len(got) != 1 {
				t.Errorf("hashed manifest = %+v", got)
			}
			// A missing directory is an empty tree.
			clear(got)
			agenttest.Must(t, c.Manifest(ctx, agentproto.ManifestRequest{Dir: filepath.Join(base, "nope")}, collect))
			if len(got) != 0 {
				t.Errorf("missing dir listed %v", got)
			}
			// Too many entries: refused by the guest itself.
			err := c.Manifest(ctx, agentproto.ManifestRequest{Dir: dir, MaxEntries: 2}, collect)
			if err == nil {
				t.Error("a tree over max_entries was listed")
			}

			for _, bad := range []string{"../sentinel", "/etc", ".", "out/../x"} {
				if err := c.Remove(ctx, dir, []string{bad}); err == nil {
					t.Errorf("remove %q accepted", bad)
				}
			}
			// Removing the link removes the link, not its target's content.
			agenttest.Must(t, c.Remove(ctx, dir, []string{"out", "sub", "not-there"}))
			if b, err := os.ReadFile(filepath.Join(base, "sentinel")); err != nil || string(b) != "keep" {
				t.Fatalf("sentinel outside: %q, %v", b, err)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("dir still holds %v", ents)
			}
		})
	}
}
