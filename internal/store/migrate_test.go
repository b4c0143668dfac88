package store

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/bangerdev/banger/internal/model"
)

func TestEmbeddedMigrations(t *testing.T) {
	migs := embeddedMigrations()
	if LatestVersion() < 2 || migs[len(migs)-1].version != LatestVersion() {
		t.Fatalf("LatestVersion() = %d with %d migrations, want at least 2", LatestVersion(), len(migs))
	}
	for i, m := range migs {
		if (i > 0 && m.version <= migs[i-1].version) || strings.TrimSpace(m.sql) == "" {
			t.Errorf("migration %d = %s version %d", i, m.name, m.version)
		}
	}
}

func TestLoadMigrationsRejectsBadSets(t *testing.T) {
	for name, fsys := range map[string]fstest.MapFS{
		"no one":   {"m/0002_b.sql": {Data: []byte("SELECT 1")}},
		"bad name": {"m/0001_a.sql": {Data: []byte("SELECT 1")}, "m/2_b.sql": {Data: []byte("SELECT 1")}},
		"twice":    {"m/0001_a.sql": {Data: []byte("SELECT 1")}, "m/0001_b.sql": {Data: []byte("SELECT 1")}},
	} {
		if migs, err := loadMigrations(fsys, "m"); err == nil {
			t.Errorf("%s: loadMigrations = %v, want an error", name, migs)
		}
	}
	migs, err := loadMigrations(fstest.MapFS{"m/0002_b.sql": {Data: []byte("B")}, "m/0001_a.sql": {Data: []byte("A")}}, "m")
	if err != nil || len(migs) != 2 || migs[0].sql != "A" || migs[1].sql != "B" {
		t.Errorf("loadMigrations = %v, %v", migs, err)
	}
	// A gap is allowed (numbers handed out to separate branches); the
	// version is the highest number.
	migs, err = loadMigrations(fstest.MapFS{"m/0001_a.sql": {Data: []byte("A")}, "m/0004_d.sql": {Data: []byte("D")}}, "m")
	if err != nil || len(migs) != 2 || latestOf(migs) != 4 {
		t.Errorf("loadMigrations with a gap = %v, %v", migs, err)
	}
}

// seedV1 writes rows using only the 0001 columns, so they are valid at every
// later version too.
func seedV1(t *testing.T, db *sql.DB) {
	t.Helper()
	if _, err := db.Exec(`
		INSERT INTO images (name, source, digest, size_bytes, path, created_at)
			VALUES ('bookworm', 'debootstrap:bookworm', 'abc', 1, '/i/bookworm.ext4', '2025-01-01T00:00:00.000000000Z');
		INSERT INTO kernels (name, release, source, sha256, path, created_at)
			VALUES ('debian-6.1', '6.1.0', 'apt', 'def', '/k/vmlinuz', '2025-01-01T00:00:00.000000000Z');
		INSERT INTO vms (id, name, state, image, kernel, vmm, cpus, memory_mib, disk_bytes, init_mode, dir, created_at, updated_at)
			VALUES ('00000000000000aa', 'old', 'stopped', 'bookworm', 'debian-6.1', 'qemu', 1, 512, 1, 'fast', '/v/old',
				'2025-01-01T00:00:00.000000000Z', '2025-01-01T00:00:00.000000000Z');`); err != nil {
		t.Fatalf("seed: %v", err)
	}
}

// TestMigrateFromEveryVersion: a store built by the first k migrations, for
// every k, then opened, has exactly the schema of a fresh store, and its rows.
func TestMigrateFromEveryVersion(t *testing.T) {
	ctx := context.Background()
	migs := embeddedMigrations()
	freshPath := filepath.Join(t.TempDir(), "fresh.db")
	fresh, err := Open(ctx, freshPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := fresh.SchemaVersion(ctx); err != nil || v != LatestVersion() {
		t.Fatalf("fresh SchemaVersion = %d, %v; want %d", v, err, LatestVersion())
	}
	if err := fresh.Close(); err != nil {
		t.Fatal(err)
	}
	want, wantV := schemaOf(t, freshPath)
	if !strings.Contains(want, "table vms") || !strings.Contains(want, "table leases") || wantV != LatestVersion() {
		t.Fatalf("fresh schema (version %d) looks wrong:\n%s", wantV, want)
	}

	for k := 0; k < len(migs); k++ {
		path := filepath.Join(t.TempDir(), "old.db")
		old, err := openWith(ctx, path, nil, options{migrations: migs[:k:k]})
		if err != nil {
			t.Fatalf("build store at version %d: %v", k, err)
		}
		if err := old.Close(); err != nil {
			t.Fatal(err)
		}
		if _, v := schemaOf(t, path); v != latestOf(migs[:k]) {
			t.Fatalf("store built with %d migrations is at version %d", k, v)
		}
		if k >= 1 {
			db := rawDB(t, path)
			seedV1(t, db)
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		}

		check, err := Check(ctx, path)
		if err != nil || !check.WouldSucceed || check.Current != latestOf(migs[:k]) || check.Target != LatestVersion() {
			t.Errorf("from %d: Check = %+v, %v", k, check, err)
		}

		s, err := Open(ctx, path, nil)
		if err != nil {
			t.Fatalf("migrate from %d: %v", k, err)
		}
		if k >= 1 {
			vm, err := s.GetVM(ctx, "old")
			if err != nil || vm.ID != "00000000000000aa" || vm.State != model.StateStopped || vm.BootID != "" || vm.PIDStartTime != 0 {
				t.Errorf("from %d: seeded vm = %+v, %v", k, vm, err)
			}
			if users, err := s.ImageInUse(ctx, "bookworm"); err != nil || len(users) != 1 {
				t.Errorf("from %d: ImageInUse = %v, %v", k, users, err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		got, gotV := schemaOf(t, path)
		if got != want || gotV != wantV {
			t.Errorf("schema migrated from version %d (now %d) differs from fresh (%d):\n got:\n%s\nwant:\n%s", k, gotV, wantV, got, want)
		}
	}
}

func failing(name, sqlText string) []migration {
	migs := append([]migration(nil), embeddedMigrations()...)
	return append(migs, migration{version: latestOf(migs) + 1, name: name, sql: sqlText})
}

// TestFailingMigrationLeavesStoreUnchanged: a migration that fails part-way
// leaves version, schema and rows as they were, and Check predicts it.
func TestFailingMigrationLeavesStoreUnchanged(t *testing.T) {
	ctx := context.Background()
	for name, sqlText := range map[string]string{
		// DDL then a runtime error: the new column and table must vanish.
		"runtime error": `ALTER TABLE vms ADD COLUMN doomed TEXT; CREATE TABLE doomed (x); INSERT INTO doomed VALUES (1);
			UPDATE vms SET name = 'renamed'; SELECT no_such_function();`,
		// A dangling reference that only the pre-commit foreign key check sees.
		"dangling reference": `PRAGMA defer_foreign_keys = ON; CREATE TABLE doomed (x);
			INSERT INTO leases (ip, vm_id, mac, created_at) VALUES ('10.0.0.9', 'ffffffffffffffff', '', '');`,
		"constraint": `CREATE TABLE doomed (x); INSERT INTO images (name) VALUES ('no-columns');`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "banger.db")
			s, err := Open(ctx, path, nil)
			if err != nil {
				t.Fatal(err)
			}
			vm := mustCreateVM(t, s, testVM("keep"))
			if _, err := s.PutImage(ctx, model.Image{Name: "bookworm", Source: "import:/x", Path: "/x"}); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			schemaBefore, vBefore := schemaOf(t, path)
			migs := failing("0099_doomed.sql", sqlText)

			before := dirState(t, filepath.Dir(path))
			res, err := checkWith(ctx, path, migs)
			if err != nil || res.WouldSucceed || res.Current != vBefore || res.Target != latestOf(migs) ||
				!strings.Contains(res.Reason, "0099_doomed.sql") {
				t.Errorf("Check = %+v, %v; want would fail naming the migration", res, err)
			}
			if !strings.Contains(res.String(), "migrate: would fail: ") {
				t.Errorf("Check.String() = %q", res.String())
			}
			assertDirUnchanged(t, "Check", before, dirState(t, filepath.Dir(path)))

			_, err = openWith(ctx, path, nil, options{migrations: migs})
			if err == nil || errors.Is(err, ErrSchemaTooNew) || !strings.Contains(err.Error(), "0099_doomed.sql") {
				t.Fatalf("Open with failing migration = %v, want a migration error naming it", err)
			}
			schemaAfter, vAfter := schemaOf(t, path)
			if schemaAfter != schemaBefore || vAfter != vBefore {
				t.Errorf("failed migration changed the store: version %d → %d\nbefore:\n%s\nafter:\n%s", vBefore, vAfter, schemaBefore, schemaAfter)
			}
			s, err = Open(ctx, path, nil)
			if err != nil {
				t.Fatalf("reopen after failed migration: %v", err)
			}
			defer s.Close()
			got, err := s.GetVM(ctx, vm.ID)
			if err != nil || !reflect.DeepEqual(got, vm) {
				t.Errorf("vm after failed migration = %+v, %v; want %+v", got, err, vm)
			}
			if imgs, err := s.ListImages(ctx); err != nil || len(imgs) != 1 {
				t.Errorf("images after failed migration = %v, %v", imgs, err)
			}
			if leases, err := s.ListLeases(ctx); err != nil || len(leases) != 0 {
				t.Errorf("leases after failed migration = %v, %v", leases, err)
			}
		})
	}
}

// TestFailingMigrationInChain: each migration commits on its own, so a chain
// stops at the last one that applied whole.
func TestFailingMigrationInChain(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	migs := embeddedMigrations()
	s, err := openWith(ctx, path, nil, options{migrations: migs[:1:1]})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	bad := failing("0099_doomed.sql", `CREATE TABLE doomed (x); SELECT no_such_function();`)
	if _, err := openWith(ctx, path, nil, options{migrations: bad}); err == nil {
		t.Fatal("Open with a failing last migration succeeded")
	}
	schema, v := schemaOf(t, path)
	if v != latestOf(migs) || strings.Contains(schema, "doomed") {
		t.Errorf("after chain failure: version %d (want %d), doomed table present: %v", v, latestOf(migs), strings.Contains(schema, "doomed"))
	}
}

func TestSchemaTooNewIsRefusedUntouched(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "banger.db")
	s, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustCreateVM(t, s, testVM("web"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	newer := LatestVersion() + 1
	db := rawDB(t, path)
	if _, err := db.Exec("PRAGMA user_version = " + strconv.Itoa(newer)); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	before := dirState(t, dir)
	_, err = Open(ctx, path, nil)
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open(newer store) = %v, want ErrSchemaTooNew", err)
	}
	for _, want := range []string{"version " + strconv.Itoa(newer), "up to " + strconv.Itoa(LatestVersion()), "upgrade banger"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Open error %q does not say %q", err, want)
		}
	}
	assertDirUnchanged(t, "Open", before, dirState(t, dir))

	res, err := Check(ctx, path)
	if err != nil || res.WouldSucceed || res.Current != newer || res.Target != LatestVersion() ||
		!strings.Contains(res.Reason, "upgrade banger") {
		t.Errorf("Check(newer store) = %+v, %v", res, err)
	}
	assertDirUnchanged(t, "Check", before, dirState(t, dir))
}

func TestCheckChangesNothing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()

	t.Run("missing", func(t *testing.T) {
		path := filepath.Join(dir, "missing", "banger.db")
		res, err := Check(ctx, path)
		if err != nil || !res.WouldSucceed || res.Current != 0 || res.Target != LatestVersion() {
			t.Errorf("Check(missing) = %+v, %v", res, err)
		}
		if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Check created %s: %v", filepath.Dir(path), err)
		}
	})

	t.Run("fresh", func(t *testing.T) {
		path := filepath.Join(dir, "fresh.db")
		s, err := Open(ctx, path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		before := dirState(t, dir)
		res, err := Check(ctx, path)
		if err != nil || !res.WouldSucceed || res.Current != LatestVersion() {
			t.Errorf("Check(fresh) = %+v, %v", res, err)
		}
		want := "store: " + path + "\ncurrent schema: " + strconv.Itoa(LatestVersion()) + "\ntarget schema: " + strconv.Itoa(LatestVersion()) + "\nmigrate: ok"
		if res.String() != want {
			t.Errorf("String() = %q, want %q", res.String(), want)
		}
		assertDirUnchanged(t, "Check", before, dirState(t, dir))
	})

	t.Run("empty file", func(t *testing.T) {
		path := filepath.Join(dir, "empty.db")
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if res, err := Check(ctx, path); err != nil || !res.WouldSucceed || res.Current != 0 {
			t.Errorf("Check(empty) = %+v, %v", res, err)
		}
	})

	t.Run("not a database", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "junk.db")
		if err := os.WriteFile(path, []byte(strings.Repeat("not sqlite ", 100)), 0o600); err != nil {
			t.Fatal(err)
		}
		before := dirState(t, filepath.Dir(path))
		res, err := Check(ctx, path)
		if err != nil || res.WouldSucceed || res.Reason == "" {
			t.Errorf("Check(junk) = %+v, %v; want would fail with a reason", res, err)
		}
		assertDirUnchanged(t, "Check", before, dirState(t, filepath.Dir(path)))
		if s, err := Open(ctx, path, nil); err == nil {
			s.Close()
			t.Error("Open(junk) succeeded")
		}
	})
}

// TestCheckLiveStore: while a daemon holds an old store open with rows only
// in its WAL, Check sees them and proves the migration on a copy.
func TestCheckLiveStore(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	migs := embeddedMigrations()
	s, err := openWith(ctx, path, nil, options{migrations: migs[:1:1]})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	seedV1(t, s.db)
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Fatalf("live store has no WAL: %v", err)
	}
	res, err := Check(ctx, path)
	if err != nil || !res.WouldSucceed || res.Current != 1 || res.Target != LatestVersion() {
		t.Fatalf("Check(live v1 store) = %+v, %v", res, err)
	}
	// The copy carried the WAL's row: a migration that needs it proves so.
	needsRow := failing("0099_needs_row.sql", `CREATE TABLE t (x NOT NULL); INSERT INTO t SELECT name FROM vms WHERE name = 'old';
		INSERT INTO t SELECT NULL WHERE NOT EXISTS (SELECT 1 FROM t);`)
	res, err = checkWith(ctx, path, needsRow)
	if err != nil || !res.WouldSucceed {
		t.Errorf("Check with a migration needing the WAL row = %+v, %v", res, err)
	}
	if v, err := s.SchemaVersion(ctx); err != nil || v != 1 {
		t.Errorf("live store version after Check = %d, %v; want 1", v, err)
	}
}

func TestOpenCreatesPrivateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "banger.db")
	s := func() *Store {
		s, err := Open(context.Background(), path, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	defer s.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("store mode = %v, want 0600", fi.Mode().Perm())
	}
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
}
