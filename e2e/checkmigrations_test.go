package e2e

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/bangerdev/banger/internal/store"
)

// bangerd --check-migrations exits 0 on a fresh store and non-zero on a store
// stamped with a future schema, changing nothing in either.
func TestCheckMigrationsChangesNothing(t *testing.T) {
	in := newInstance(t)
	// A missing store: reported, not created.
	out := in.ok("bangerd", "--check-migrations")
	if !strings.Contains(out, "current schema: 0") {
		t.Fatalf("missing store: %q", out)
	}
	if _, err := os.Stat(in.p.StoreFile()); err == nil {
		t.Fatal("--check-migrations created the store")
	}

	// A fresh store made by the daemon.
	in.ok("banger", "daemon", "start")
	in.ok("banger", "daemon", "stop")
	before := fileSum(t, in.p.StoreFile())
	out = in.ok("bangerd", "--check-migrations")
	want := fmt.Sprintf("current schema: %d\ntarget schema: %d\nmigrate: ok", store.LatestVersion(), store.LatestVersion())
	if !strings.Contains(out, want) {
		t.Fatalf("fresh store check:\n%s\nwant it to contain:\n%s", out, want)
	}
	if after := fileSum(t, in.p.StoreFile()); after != before {
		t.Fatal("--check-migrations changed a fresh store")
	}

	// A store from the future.
	db, err := sql.Open("sqlite", in.p.StoreFile())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(context.Background(), fmt.Sprintf("PRAGMA user_version = %d", store.LatestVersion()+1)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	before = fileSum(t, in.p.StoreFile())
	out, errOut, code := in.run("bangerd", "--check-migrations")
	if code == 0 || !strings.Contains(out+errOut, "would fail") {
		t.Fatalf("future store: exit %d\n%s%s", code, out, errOut)
	}
	if after := fileSum(t, in.p.StoreFile()); after != before {
		t.Fatal("--check-migrations changed a future store")
	}
	// And the daemon refuses to open it, saying why.
	_, errOut, code = in.run("banger", "daemon", "start")
	if code == 0 || !strings.Contains(errOut, "newer") {
		t.Fatalf("daemon on a future store: exit %d, %q", code, errOut)
	}
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}
