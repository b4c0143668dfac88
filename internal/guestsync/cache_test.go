package guestsync

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// With a cache, a guest that changed nothing is not listed again; any
// change the guest makes (a new file deep down, an edit, a removal, a new
// directory) is seen on the next round, which lists in full and repairs
// it; the host's own uploads void the listing too.
func TestSyncCacheSeesEveryGuestChange(t *testing.T) {
	ctx := context.Background()
	c := startAgent(t)
	base := t.TempDir()
	host, guest := filepath.Join(base, "host"), filepath.Join(base, "guest")
	for _, p := range []string{"a", "d/b", "d/e/f", "g/h"} {
		write(t, filepath.Join(host, p), "host "+p, 0o644)
	}
	cache := NewCache()
	opts := Options{Delete: true, Cache: cache, CacheKey: "vm\x00boot\x00" + guest}
	round := func(what string, wantCached bool) Result {
		t.Helper()
		res, err := Run(ctx, c, host, guest, opts)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if res.Cached != wantCached {
			t.Fatalf("%s: cached listing %v, want %v (%+v)", what, res.Cached, wantCached, res)
		}
		sameAs(t, host, guest)
		return res
	}
	round("first", false)
	round("after the upload", false) // the upload itself changed the guest
	if res := round("unchanged", true); res.Uploaded != 0 || res.Removed != 0 {
		t.Fatalf("unchanged round did something: %+v", res)
	}
	round("unchanged again", true)

	guestChanges := []struct {
		what string
		do   func() error
	}{
		{"new file deep down", func() error { return os.WriteFile(filepath.Join(guest, "d/e/new"), []byte("x"), 0o644) }},
		{"edit in place, same size", func() error { return os.WriteFile(filepath.Join(guest, "d/b"), []byte("HOST d/b"), 0o644) }},
		{"removal", func() error { return os.Remove(filepath.Join(guest, "g/h")) }},
		{"new directory", func() error { return os.MkdirAll(filepath.Join(guest, "d/e/z/y"), 0o755) }},
		{"chmod", func() error { return os.Chmod(filepath.Join(guest, "a"), 0o600) }},
		{"rename", func() error { return os.Rename(filepath.Join(guest, "d/e/f"), filepath.Join(guest, "d/e/f2")) }},
	}
	for _, gc := range guestChanges {
		if err := gc.do(); err != nil {
			t.Fatal(err)
		}
		round(gc.what, false) // lists in full and repairs (sameAs)
		round(gc.what+", then settled", false)
		round(gc.what+", then unchanged", true)
	}

	// A host change is found by the host's own walk, whatever the cache.
	write(t, filepath.Join(host, "d/e/host-new"), "n", 0o644)
	if res := round("host change", true); res.Uploaded == 0 {
		t.Fatalf("host change not uploaded: %+v", res)
	}
	round("after the host change", false)

	// Another key (another boot) never meets this listing.
	other := opts
	other.CacheKey = "vm\x00boot2\x00" + guest
	if res, err := Run(ctx, c, host, guest, other); err != nil || res.Cached {
		t.Fatalf("another boot's key: %+v, %v", res, err)
	}
}
