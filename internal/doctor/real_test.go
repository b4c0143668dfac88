package doctor

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/testutil"
)

// TestRealHostWithoutDaemon runs every check against this machine with the
// real defaults and an empty BANGER_HOME: QEMU is found and works, the
// daemon is reported stopped, and doctor leaves nothing behind.
func TestRealHostWithoutDaemon(t *testing.T) {
	testutil.RequireQEMU(t)
	home := t.TempDir()
	p := testutil.UserPaths(t, home)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := Run(ctx, Config{Paths: p})
	for _, c := range r.Checks {
		t.Logf("%-5s %-13s %s", c.Status, c.Name, c.Detail)
	}
	expect(t, mustFind(t, r, CheckQEMU), OK, "microvm machine available", "")
	expect(t, mustFind(t, r, CheckDaemon), Warn, "not running (socket "+p.Socket(), "banger daemon start")
	expect(t, mustFind(t, r, CheckStore), OK, "no store yet", "")
	if k := mustFind(t, r, CheckKVM); k.Status == Fail {
		t.Fatalf("kvm check failed; it can only warn: %+v", k)
	}
	ents, err := os.ReadDir(home)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Fatalf("doctor wrote into BANGER_HOME: %s", filepath.Join(home, ents[0].Name()))
	}
}
