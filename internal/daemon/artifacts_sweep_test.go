package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/store"
)

// TestSweepArtifacts: what a crash leaves of a pull, import or kernel pull
// (staging files and directories, artifact directories without a row) is
// removed at start; recorded artifacts and unrelated files are not.
func TestSweepArtifacts(t *testing.T) {
	home := t.TempDir()
	p, err := paths.ResolveUser(func(k string) string {
		if k == paths.EnvHome {
			return home
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Ensure(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := store.Open(ctx, p.StoreFile(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC()
	if _, err := st.PutImage(ctx, model.Image{Name: "kept", Path: filepath.Join(p.ImagesDir(), "kept", "rootfs.ext4"), CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutKernel(ctx, model.Kernel{Name: "kern", Path: filepath.Join(p.KernelsDir(), "kern", "vmlinuz"), CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	files := map[string]bool{ // path under home → survives
		"data/images/kept/rootfs.ext4":                   true,
		"data/images/kept/image.json":                    true,
		"data/images/kept/.rootfs.ext4.tmp-123":          false,
		"data/images/half/rootfs.ext4":                   false,
		"data/images/half/image.json":                    false,
		"data/kernels/kern/vmlinuz":                      true,
		"data/kernels/orphan/vmlinuz":                    false,
		"data/kernels/.staging-kern-1/package.deb":       false,
		"cache/layers/sha256/" + strings.Repeat("a", 64): true,
		"cache/layers/sha256/.aaaa.partial-77":           false,
		"cache/downloads/indices/x.Packages":             true,
		"cache/downloads/indices/.fetch-9/Packages.xz":   false,
		"cache/.rootfs-5/etc/passwd":                     false,
		"cache/banger-import-6/etc/passwd":               false,
		"cache/initramfs/keep.cpio":                      true,
		"cache/banger-debootstrap-7/etc/passwd":          true,
	}
	for f := range files {
		full := filepath.Join(home, f)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := &Daemon{store: st, paths: p, log: slog.New(slog.DiscardHandler)}
	d.sweepArtifacts(ctx)
	for f, keep := range files {
		_, err := os.Stat(filepath.Join(home, f))
		if keep && err != nil {
			t.Errorf("%s was removed: %v", f, err)
		}
		if !keep && err == nil {
			t.Errorf("%s survived the sweep", f)
		}
	}
	for _, gone := range []string{"data/images/half", "data/kernels/orphan", "data/kernels/.staging-kern-1", "cache/.rootfs-5", "cache/banger-import-6", "cache/downloads/indices/.fetch-9"} {
		if _, err := os.Stat(filepath.Join(home, gone)); err == nil {
			t.Errorf("directory %s survived the sweep", gone)
		}
	}
	imgs, _ := st.ListImages(ctx)
	if len(imgs) != 1 || imgs[0].Name != "kept" {
		t.Fatalf("images after the sweep: %+v", imgs)
	}
	ents, _ := os.ReadDir(p.ImagesDir())
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"kept"}) {
		t.Fatalf("image dirs after the sweep: %v", names)
	}
}
