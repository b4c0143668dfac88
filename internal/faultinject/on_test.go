//go:build faultinject

package faultinject

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestPauseWritesMarkerAndBlocks(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvPause, "stop/poweroff,create/disk")
	t.Setenv(EnvDir, dir)
	Pause(context.Background(), Point("start", "disk")) // not listed: returns
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Pause(ctx, Point("create", "disk")); close(done) }()
	marker := filepath.Join(dir, "create.disk")
	deadline := time.Now().Add(5 * time.Second)
	for !fileExists(marker) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !fileExists(marker) {
		t.Fatal("no marker file")
	}
	select {
	case <-done:
		t.Fatal("Pause returned before its context ended")
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	<-done
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
