package agentclient

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentserver"
)

// lyingManifestAgent answers fs.manifest with reply and then the frames
// frames writes: a compromised guest.
func lyingManifestAgent(t *testing.T, reply any, frames func(st *agentproto.Stream)) *Client {
	t.Helper()
	return scriptedAgent(t, func(st *agentproto.Stream, method string) {
		if method != agentproto.MethodManifest || agentserver.Respond(st, reply) != nil {
			return
		}
		frames(st)
	})
}

func TestTrackedManifestRefusesLyingReplies(t *testing.T) {
	ctx := context.Background()
	eof := func(st *agentproto.Stream) { _ = st.WriteFrame(agentproto.FrameEOF, nil) }
	entries := func(st *agentproto.Stream) {
		_ = st.WriteJSONFrame(agentproto.FrameManifest, []agentproto.ManifestEntry{{Path: "x", Type: agentproto.EntryFile}})
		_ = st.WriteFrame(agentproto.FrameEOF, nil)
	}
	for _, tc := range []struct {
		what   string
		reply  any
		frames func(*agentproto.Stream)
		req    agentproto.ManifestRequest
	}{
		{"unchanged, though no listing was named", agentproto.ManifestReply{Unchanged: true}, eof, agentproto.ManifestRequest{Dir: "/w", Track: true}},
		{"unchanged to a hash request", agentproto.ManifestReply{Unchanged: true}, eof, agentproto.ManifestRequest{Dir: "/w", Paths: []string{"a"}, Since: "t"}},
		{"entries after unchanged", agentproto.ManifestReply{Unchanged: true}, entries, agentproto.ManifestRequest{Dir: "/w", Since: "t"}},
		{"a huge token", agentproto.ManifestReply{Token: strings.Repeat("a", 1<<16)}, eof, agentproto.ManifestRequest{Dir: "/w", Track: true}},
	} {
		c := lyingManifestAgent(t, tc.reply, tc.frames)
		called := false
		_, err := c.TrackedManifest(ctx, tc.req, func([]agentproto.ManifestEntry) error { called = true; return nil })
		if !errors.Is(err, agentproto.ErrBadManifest) {
			t.Errorf("%s: %v, want ErrBadManifest", tc.what, err)
		}
		if called {
			t.Errorf("%s: entries were handed on", tc.what)
		}
	}
}

// The real agent: a token for a tracked listing, "unchanged" only for that
// token and only while nothing changed, never for another directory's or
// a made-up token, and a listing again after any change.
func TestManifestTracking(t *testing.T) {
	ctx := context.Background()
	c := startUnix(t, newTestServer(agentserver.ServerOptions{}))
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	list := func(since string) (agentproto.ManifestReply, int) {
		t.Helper()
		n := 0
		r, err := c.TrackedManifest(ctx, agentproto.ManifestRequest{Dir: dir, Track: true, Since: since}, func(b []agentproto.ManifestEntry) error { n += len(b); return nil })
		if err != nil {
			t.Fatal(err)
		}
		return r, n
	}
	r1, n := list("")
	if r1.Token == "" || r1.Unchanged || n != 2 {
		t.Fatalf("first listing: %+v, %d entries", r1, n)
	}
	if r, n := list(r1.Token); !r.Unchanged || n != 0 {
		t.Fatalf("unchanged: %+v, %d entries", r, n)
	}
	if r, _ := list("made-up"); r.Unchanged {
		t.Fatal("unchanged for a made-up token")
	}
	// That listing replaced r1's tracker: r1 is void now.
	r2, _ := list("")
	if r, _ := list(r1.Token); r.Unchanged {
		t.Fatal("unchanged for a replaced token")
	}
	r3, _ := list("")
	if err := os.WriteFile(filepath.Join(dir, "a", "b", "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r, n := list(r3.Token); r.Unchanged || n != 3 {
		t.Fatalf("after a change deep down: %+v, %d entries", r, n)
	}
	_ = r2
}
