package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// oldStore builds a store at the schema of the first k migrations, with a
// VM in it, closed.
func oldStore(t *testing.T, path string, k int) {
	t.Helper()
	s, err := openWith(context.Background(), path, nil, options{migrations: embeddedMigrations()[:k:k]})
	if err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, path)
	seedV1(t, db)
	db.Close()
	s.Close()
}

// TestMigrationBacksUpFirst: opening an old store backs it up (a store at
// the old schema, with its rows, named with both versions) before it is
// migrated, and only the newest KeepBackups are kept.
func TestMigrationBacksUpFirst(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "banger.db")
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	for i := 0; i < KeepBackups+2; i++ {
		os.Remove(path)
		os.Remove(path + "-wal")
		os.Remove(path + "-shm")
		oldStore(t, path, 3)
		s, err := openWith(ctx, path, nil, options{now: clock.now})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	bs, err := Backups(path)
	if err != nil || len(bs) != KeepBackups {
		t.Fatalf("Backups = %+v, %v; want the newest %d", bs, err, KeepBackups)
	}
	if !bs[0].TakenAt.After(bs[1].TakenAt) {
		t.Fatalf("backups not newest first: %+v", bs)
	}
	b := bs[0]
	if b.Version != 3 || b.Before != LatestVersion() || !strings.Contains(filepath.Base(b.Path), "banger-v3-before-v") {
		t.Fatalf("backup %+v: want schema 3 before %d", b, LatestVersion())
	}
	if fi, err := os.Stat(b.Path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v (want mode 0600)", fi, err)
	}
	if _, v := schemaOf(t, b.Path); v != 3 {
		t.Fatalf("backup is at schema %d, want 3", v)
	}
	db := rawDB(t, b.Path)
	var name string
	if err := db.QueryRow(`SELECT name FROM vms`).Scan(&name); err != nil || name != "old" {
		t.Fatalf("backup's vm row: %q, %v", name, err)
	}
	// A current store is not backed up again.
	s, err := openWith(ctx, path, nil, options{now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if again, _ := Backups(path); len(again) != KeepBackups || again[0].Path != b.Path {
		t.Fatalf("opening a current store took a backup: %+v", again)
	}
}

// TestFailingMigrationAfterBackup: a migration that fails part-way leaves
// the store byte-for-byte as the backup taken before it shows it, and the
// store as it was.
func TestFailingMigrationAfterBackup(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	oldStore(t, path, 3)
	schemaBefore, vBefore := schemaOf(t, path)
	migs := append(append([]migration(nil), embeddedMigrations()[:4]...),
		migration{version: 99, name: "0099_doomed.sql", sql: `CREATE TABLE doomed (x); UPDATE vms SET name = 'renamed'; SELECT no_such_function();`})
	if _, err := openWith(ctx, path, nil, options{migrations: migs}); err == nil || !strings.Contains(err.Error(), "0099_doomed.sql") {
		t.Fatalf("Open with a failing migration = %v", err)
	}
	// Migration 4 applied whole and committed; the doomed one left nothing.
	schemaAfter, vAfter := schemaOf(t, path)
	if vBefore != 3 || vAfter != 4 || strings.Contains(schemaAfter, "doomed") || schemaAfter == schemaBefore {
		t.Fatalf("after a failed migration: version %d → %d, doomed present %v", vBefore, vAfter, strings.Contains(schemaAfter, "doomed"))
	}
	db := rawDB(t, path)
	var name string
	if err := db.QueryRow(`SELECT name FROM vms`).Scan(&name); err != nil || name != "old" {
		t.Fatalf("vm row after the failed migration: %q, %v", name, err)
	}
	bs, _ := Backups(path)
	if len(bs) != 1 || bs[0].Version != 3 {
		t.Fatalf("backups: %+v, want one at schema 3", bs)
	}
	if s, _ := schemaOf(t, bs[0].Path); s != schemaBefore {
		t.Fatalf("the backup's schema differs from the store before:\n%s\n%s", s, schemaBefore)
	}
}

// TestDamagedStoreIsRefusedUntouched: a truncated, overwritten or foreign
// file is refused with ErrCorrupt, is left byte-for-byte as it was (no
// -wal, no -shm), and the message says how to restore the newest backup.
func TestDamagedStoreIsRefusedUntouched(t *testing.T) {
	ctx := context.Background()
	for name, damage := range map[string]func(t *testing.T, path string){
		"truncated": func(t *testing.T, path string) {
			fi, _ := os.Stat(path)
			if err := os.Truncate(path, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		},
		"overwritten page": func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			junk := []byte(strings.Repeat("\xde\xad\xbe\xef", 1024))
			if _, err := f.WriteAt(junk, 4096); err != nil {
				t.Fatal(err)
			}
		},
		"not a database": func(t *testing.T, path string) {
			os.WriteFile(path, []byte(strings.Repeat("this is not sqlite ", 400)), 0o600)
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "banger.db")
			oldStore(t, path, 3)
			s, err := Open(ctx, path, nil) // migrates, so a backup exists
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 50; i++ {
				mustCreateVM(t, s, testVM("vm"+string(rune('a'+i%26))+string(rune('a'+i/26))))
			}
			s.Close()
			damage(t, path)
			before := dirState(t, dir)
			bs, _ := Backups(path)
			_, err = Open(ctx, path, nil)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "restore the newest backup") || !strings.Contains(err.Error(), bs[0].Path) {
				t.Fatalf("Open of a %s store = %v; want ErrCorrupt naming backup %s", name, err, bs[0].Path)
			}
			assertDirUnchanged(t, "Open", before, dirState(t, dir))
			res, err := Check(ctx, path)
			if err != nil || res.WouldSucceed || !strings.Contains(res.Reason, "store is damaged") || !strings.Contains(res.Reason, bs[0].Path) {
				t.Fatalf("Check of a %s store = %+v, %v", name, res, err)
			}
			assertDirUnchanged(t, "Check", before, dirState(t, dir))
		})
	}
}
