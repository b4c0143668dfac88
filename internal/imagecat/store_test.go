package imagecat

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestStoreImportListRemove(t *testing.T) {
	requireE2fsprogs(t)
	ctx := testCtx(t, 2*time.Minute)
	s := Store{Dir: filepath.Join(t.TempDir(), "images")}
	if list, err := s.List(); err != nil || len(list) != 0 {
		t.Fatalf("empty store lists %v %v", list, err)
	}
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "etc/os-release"), "ID=store\n")
	res, err := s.Import(ctx, "dev", src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != s.RootfsPath("dev") {
		t.Fatalf("path %s, want %s", res.Path, s.RootfsPath("dev"))
	}
	assertDirHolds(t, filepath.Join(s.Dir, "dev"), "image.json", "rootfs.ext4")
	got, err := s.Get("dev")
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != res.Digest || got.Source != res.Source || !got.CreatedAt.Equal(res.CreatedAt) {
		t.Fatalf("record %+v, want %+v", got, res)
	}
	// An unfinished image (no image.json) is not listed.
	if err := os.MkdirAll(filepath.Join(s.Dir, "half"), 0o755); err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].Name != "dev" {
		t.Fatalf("list = %+v %v", list, err)
	}
	// A failed import into a new name leaves no directory behind.
	if _, err := s.Import(ctx, "broken", filepath.Join(src, "missing"), ImportOptions{}); err == nil {
		t.Fatal("import of a missing source succeeded")
	}
	if _, err := os.Stat(filepath.Join(s.Dir, "broken")); !os.IsNotExist(err) {
		t.Fatalf("failed import left its directory: %v", err)
	}
	if err := s.Save(Result{Name: "dev", Path: "/elsewhere/rootfs.ext4"}); err == nil {
		t.Fatal("Save accepted a rootfs outside the store")
	}
	for _, bad := range []string{"../x", "", "A", "x/y"} {
		if _, err := s.Get(bad); !errors.Is(err, ErrInvalidName) {
			t.Fatalf("Get(%q): %v, want ErrInvalidName", bad, err)
		}
	}
	if err := s.Remove("dev"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("dev"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Remove: %v, want ErrNotFound", err)
	}
	if err := s.Remove("dev"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Remove: %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, "dev")); !os.IsNotExist(err) {
		t.Fatalf("image dir still there: %v", err)
	}
}
