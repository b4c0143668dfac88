package kernelcat

import (
	"bufio"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/debarchive"
	"github.com/bangerdev/banger/internal/download"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/progress"
)

func testCtx(t *testing.T, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// storeEntries lists everything in the kernels dir, hidden staging included.
func storeEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// tamperedArchive reports a wrong SHA-256 for every package it resolves,
// as a compromised or corrupted index would.
type tamperedArchive struct{ PackageSource }

func (a tamperedArchive) ResolveImagePackage(ctx context.Context, name string, report progress.Func) (debarchive.Package, error) {
	p, err := a.PackageSource.ResolveImagePackage(ctx, name, report)
	p.SHA256 = strings.Repeat("0", 64)
	return p, err
}

// TestPullDebianCloud pulls the default kernel for real from the host's
// Debian archive (reachable on dev and CI machines), after first proving a
// pull whose index hash is wrong is rejected and leaves nothing behind.
func TestPullDebianCloud(t *testing.T) {
	srcs, err := debarchive.ReadHostSources("/")
	if err != nil {
		t.Fatal(err)
	}
	archive, err := debarchive.New(debarchive.Config{Sources: srcs, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 9*time.Minute)

	t.Run("wrong hash is rejected", func(t *testing.T) {
		dir := t.TempDir()
		s, err := NewStore(StoreConfig{Dir: dir, Archive: tamperedArchive{archive}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Pull(ctx, "debian-cloud", nil)
		if !errors.Is(err, download.ErrHashMismatch) {
			t.Fatalf("got %v, want a hash mismatch", err)
		}
		if left := storeEntries(t, dir); len(left) != 0 {
			t.Fatalf("failed pull left %v in the kernel store", left)
		}
	})

	dir := t.TempDir()
	s, err := NewStore(StoreConfig{Dir: dir, Archive: archive})
	if err != nil {
		t.Fatal(err)
	}
	var last progress.Event
	start := time.Now()
	k, err := s.Pull(ctx, "debian-cloud", func(ev progress.Event) {
		if ev.Stage == "download" {
			last = ev
		}
	})
	if err != nil {
		t.Fatalf("pull debian-cloud: %v", err)
	}
	t.Logf("pulled in %s: %+v", time.Since(start), k)
	if last.Total < 1<<20 || last.Done != last.Total {
		t.Errorf("last download event %+v", last)
	}
	want, err := archive.ResolveImagePackage(ctx, "linux-image-cloud-amd64", nil)
	if err != nil {
		t.Fatal(err)
	}
	if k.Source != fmt.Sprintf("debian:%s=%s", want.Name, want.Version) || k.Release != strings.TrimPrefix(want.Name, "linux-image-") {
		t.Errorf("source %q release %q, want package %s %s", k.Source, k.Release, want.Name, want.Version)
	}
	vmlinuz, err := os.ReadFile(k.Path)
	if err != nil {
		t.Fatal(err)
	}
	if k.Path != filepath.Join(dir, "debian-cloud", "vmlinuz") || sha(vmlinuz) != k.SHA256 {
		t.Errorf("path %s sha256 %s, file hashes to %s", k.Path, k.SHA256, sha(vmlinuz))
	}
	checkVMLinux(t, k.VMLinux)
	if !slices.Equal(k.VMMs, []model.VMMKind{model.VMMQEMU}) {
		t.Errorf("vmms %v, want qemu only", k.VMMs)
	}
	if !strings.Contains(strings.Join(k.Notes, "\n"), "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES") {
		t.Errorf("notes do not say why firecracker cannot boot it: %q", k.Notes)
	}
	cfg, err := os.ReadFile(k.Config)
	if err != nil || !strings.Contains(string(cfg), "CONFIG_VIRTIO_MMIO=m") {
		t.Errorf("config %s: %v", k.Config, err)
	}
	checkModules(t, k.ModulesDir)

	// The store lists, gets and removes it; the record survives a re-read.
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].Name != "debian-cloud" {
		t.Fatalf("list: %+v %v", list, err)
	}

	t.Run("import the pulled bzImage", func(t *testing.T) {
		idir := t.TempDir()
		is, _ := NewStore(StoreConfig{Dir: idir})
		ik, err := is.Import(ctx, "imported", k.Path, k.ModulesDir)
		if err != nil {
			t.Fatal(err)
		}
		if ik.Release != k.Release || ik.SHA256 != k.SHA256 || ik.Source != "local:"+k.Path {
			t.Errorf("imported %+v", ik)
		}
		checkVMLinux(t, ik.VMLinux)
		checkModules(t, ik.ModulesDir)
		if !slices.Equal(ik.VMMs, []model.VMMKind{model.VMMQEMU}) {
			t.Errorf("imported vmms %v", ik.VMMs)
		}
		// No config-RELEASE beside the stored vmlinuz: the check says so.
		if !strings.Contains(strings.Join(ik.Notes, " "), "no kernel config") {
			t.Errorf("notes: %q", ik.Notes)
		}
		// An ELF vmlinux imports as the boot image itself.
		ek, err := is.Import(ctx, "elf", k.VMLinux, "")
		if err != nil {
			t.Fatal(err)
		}
		if ek.Path != filepath.Join(idir, "elf", "vmlinux") || ek.VMLinux != ek.Path || ek.Release != k.Release || ek.ModulesDir != "" {
			t.Errorf("ELF import: %+v", ek)
		}
		if _, err := is.Import(ctx, "text", k.Config, ""); !errors.Is(err, ErrNotKernel) {
			t.Errorf("importing a text file: %v", err)
		}
		if _, err := is.Import(ctx, "../evil", k.Path, ""); !errors.Is(err, ErrBadName) {
			t.Errorf("importing under a bad name: %v", err)
		}
		if left := storeEntries(t, idir); !slices.Equal(left, []string{"elf", "imported"}) {
			t.Errorf("store holds %v", left)
		}
	})

	if err := s.Remove("debian-cloud"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("debian-cloud"); !errors.Is(err, ErrUnknownKernel) {
		t.Errorf("get after remove: %v", err)
	}
	if left := storeEntries(t, dir); len(left) != 0 {
		t.Errorf("remove left %v", left)
	}
}

func checkVMLinux(t *testing.T, p string) {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Fatalf("vmlinux %q is not an ELF: %v", p, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 || f.Entry == 0 || f.Type != elf.ET_EXEC {
		t.Errorf("vmlinux: machine %s entry %#x type %s", f.Machine, f.Entry, f.Type)
	}
}

// checkModules looks for the files the guest's /init needs to load virtio.
func checkModules(t *testing.T, dir string) {
	t.Helper()
	for _, f := range []string{"modules.dep", "modules.alias", "modules.builtin", "modules.order", "kernel/drivers/block/virtio_blk.ko"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("modules tree: %v", err)
		}
	}
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return
	}
	defer f.Close()
	deps := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		mod, d, _ := strings.Cut(sc.Text(), ":")
		deps[mod] = strings.TrimSpace(d)
	}
	if len(deps) < 100 {
		t.Errorf("modules.dep lists only %d modules", len(deps))
	}
	// Loading each list from its end (as modprobe does) must load every
	// module after its own dependencies.
	for mod, list := range deps {
		loaded := map[string]bool{}
		order := strings.Fields(list)
		slices.Reverse(order)
		for _, m := range append(order, mod) {
			for _, d := range strings.Fields(deps[m]) {
				if !loaded[d] {
					t.Fatalf("modules.dep for %s loads %s before its dependency %s", mod, m, d)
				}
			}
			loaded[m] = true
		}
	}
	net := deps["kernel/drivers/net/virtio_net.ko"]
	for _, want := range []string{"kernel/drivers/net/net_failover.ko", "kernel/net/core/failover.ko", "kernel/drivers/virtio/virtio.ko"} {
		if !strings.Contains(net, want) {
			t.Errorf("virtio_net deps %q lack %s", net, want)
		}
	}
	alias, _ := os.ReadFile(filepath.Join(dir, "modules.alias"))
	if !strings.Contains(string(alias), " virtio_blk\n") {
		t.Errorf("modules.alias has no virtio_blk alias")
	}
	if l, err := os.Readlink(filepath.Join(dir, "build")); err == nil {
		t.Errorf("a link out of the modules tree was kept: build -> %s", l)
	}
}

// TestPullURL exercises the pinned-URL form against a local server with a
// catalog override: a good pull, a wrong hash and an unpinned entry.
func TestPullURL(t *testing.T) {
	bz := makeBzImage(t, compress(t, "zstd", makeELF(t, true, "6.1.102-fc")), "6.1.102-fc")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/vmlinux-6.1" {
			http.NotFound(w, r)
			return
		}
		w.Write(bz)
	}))
	defer srv.Close()
	cat, err := ParseCatalog(fmt.Appendf(nil, `{"version": 7, "default": "fc", "kernels": [
		{"name": "fc", "source": {"kind": "url", "url": "%[1]s/vmlinux-6.1", "sha256": "%[2]s", "size": %[3]d, "vmms": ["firecracker", "qemu"]}},
		{"name": "fc-bad", "source": {"kind": "url", "url": "%[1]s/vmlinux-6.1", "sha256": "%[4]s", "size": %[3]d}},
		{"name": "fc-gone", "source": {"kind": "url", "url": "%[1]s/missing", "sha256": "%[2]s", "size": %[3]d}},
		{"name": "unpinned", "source": {"kind": "url", "url": "%[1]s/vmlinux-6.1"}}
	]}`, srv.URL, sha(bz), len(bz), strings.Repeat("1", 64)))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s, err := NewStore(StoreConfig{Dir: dir, Catalog: cat, Client: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, time.Minute)
	for name, want := range map[string]error{"fc-bad": download.ErrHashMismatch, "fc-gone": download.ErrHTTPStatus, "unpinned": ErrUnpinned, "nope": ErrUnknownKernel} {
		if _, err := s.Pull(ctx, name, nil); !errors.Is(err, want) {
			t.Errorf("pull %s: got %v, want %v", name, err, want)
		}
	}
	if left := storeEntries(t, dir); len(left) != 0 {
		t.Fatalf("failed pulls left %v", left)
	}
	k, err := s.Pull(ctx, "fc", nil)
	if err != nil {
		t.Fatal(err)
	}
	if k.Release != "6.1.102-fc" || k.SHA256 != sha(bz) || k.CatalogVersion != 7 || k.Source != srv.URL+"/vmlinux-6.1" {
		t.Errorf("pulled %+v", k)
	}
	checkVMLinux(t, k.VMLinux)
	if !slices.Equal(k.VMMs, []model.VMMKind{"firecracker", "qemu"}) {
		t.Errorf("vmms %v", k.VMMs)
	}
	// A second pull replaces the first in place.
	k2, err := s.Pull(ctx, "fc", nil)
	if err != nil || !k2.CreatedAt.After(k.CreatedAt) && !k2.CreatedAt.Equal(k.CreatedAt) {
		t.Fatalf("re-pull: %+v %v", k2, err)
	}
	if left := storeEntries(t, dir); !slices.Equal(left, []string{"fc"}) {
		t.Errorf("store after re-pull holds %v", left)
	}
}

func TestNewStoreRemovesStaleStaging(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, ".staging-old-123")
	fresh := filepath.Join(dir, ".staging-new-456")
	for _, d := range []string{stale, fresh} {
		if err := os.MkdirAll(filepath.Join(d, "modules"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-48 * time.Hour)
	os.Chtimes(stale, old, old)
	if _, err := NewStore(StoreConfig{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if left := storeEntries(t, dir); !slices.Equal(left, []string{".staging-new-456"}) {
		t.Errorf("after NewStore the store holds %v", left)
	}
}
