//go:build !faultinject

package faultinject

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestReleaseBuildIgnoresFaults: without the build tag the environment that
// would pause a fault-injection build changes nothing: no marker, no wait.
func TestReleaseBuildIgnoresFaults(t *testing.T) {
	if Enabled {
		t.Fatal("fault injection is enabled in a build without the faultinject tag")
	}
	dir := t.TempDir()
	t.Setenv(EnvPause, "create/disk")
	t.Setenv(EnvDir, dir)
	start := time.Now()
	Pause(context.Background(), Point("create", "disk"))
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Pause blocked for %s in a release build", d)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("Pause wrote %v in a release build", ents)
	}
}
