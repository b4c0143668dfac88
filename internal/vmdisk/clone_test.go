package vmdisk

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestCloneKeepsContentAndHoles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "img")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	head := bytes.Repeat([]byte("banger"), 1000)
	tail := bytes.Repeat([]byte{0xab}, 4096)
	f.WriteAt(head, 0)
	f.WriteAt(tail, size-8192)
	f.Close()

	dst := filepath.Join(dir, "disk")
	if _, err := Clone(src, dst); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Fatal("clone differs from the image")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dst, &st); err != nil {
		t.Fatal(err)
	}
	if allocated := st.Blocks * 512; allocated > 4<<20 {
		t.Fatalf("clone of a 64 MiB sparse image allocates %d bytes: holes were filled", allocated)
	}
	// dst exists now: a second clone must refuse, not overwrite.
	if _, err := Clone(src, dst); err == nil {
		t.Fatal("clone over an existing disk succeeded")
	}
	// A missing image leaves nothing behind.
	if _, err := Clone(filepath.Join(dir, "nope"), filepath.Join(dir, "d2")); err == nil {
		t.Fatal("clone of a missing image succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "d2")); !os.IsNotExist(err) {
		t.Fatal("failed clone left a file")
	}
}
