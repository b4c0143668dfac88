package debarchive

import (
	"strings"
	"testing"
	"time"
)

// TestResolveFromThisHostsArchive resolves Debian's cloud kernel through the
// host's real apt sources, signatures and indices (Debian's archive is
// reachable on banger's dev and CI machines). The newest version lives in
// the security suite, so this also proves resolution spans every suite.
func TestResolveFromThisHostsArchive(t *testing.T) {
	srcs, err := ReadHostSources("/")
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	a, err := New(Config{Sources: srcs, CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 5*time.Minute)
	start := time.Now()
	meta, err := a.Resolve(ctx, "linux-image-cloud-amd64", nil)
	if err != nil {
		t.Fatalf("resolve from the host's archive: %v", err)
	}
	t.Logf("first resolve took %s: %+v", time.Since(start), meta)
	img, err := a.ResolveImagePackage(ctx, "linux-image-cloud-amd64", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !kernelImage.MatchString(img.Name) || !strings.HasSuffix(img.Name, "-cloud-amd64") || len(img.SHA256) != 64 || img.Size < 1<<20 {
		t.Errorf("image package looks wrong: %+v", img)
	}
	if !strings.Contains(meta.Depends, img.Name) {
		t.Errorf("metapackage %s depends on %q, not %s", meta.Version, meta.Depends, img.Name)
	}
	// No suite may hold a higher version than the one chosen.
	for _, idx := range a.indices {
		for _, p := range idx["linux-image-cloud-amd64"] {
			if CompareVersions(p.Version, meta.Version) > 0 {
				t.Errorf("suite %s has %s, higher than the chosen %s", p.Suite, p.Version, meta.Version)
			}
		}
	}
	start = time.Now()
	b, _ := New(Config{Sources: srcs, CacheDir: cache})
	if _, err := b.Resolve(ctx, "linux-image-cloud-amd64", nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("cached resolve took %s", time.Since(start))
}
