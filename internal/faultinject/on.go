//go:build faultinject

package faultinject

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Enabled reports whether this binary was built with fault injection.
const Enabled = true

// Pause blocks at point when BANGER_FAULT_PAUSE lists it, after writing
// the marker file that tells the test the daemon is there.
func Pause(ctx context.Context, point string) {
	want := strings.Split(os.Getenv(EnvPause), ",")
	dir := os.Getenv(EnvDir)
	if dir == "" || !slices.Contains(want, point) {
		return
	}
	marker := filepath.Join(dir, strings.ReplaceAll(point, "/", "."))
	if err := os.WriteFile(marker+".tmp", []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return
	}
	if err := os.Rename(marker+".tmp", marker); err != nil {
		return
	}
	t := time.NewTimer(MaxPause)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
