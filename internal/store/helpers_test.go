package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/model"
)

// fakeClock hands out strictly increasing times.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time {
	c.t = c.t.Add(time.Second)
	return c.t
}

func openTest(t testing.TB) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "banger.db"), nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// rawDB opens a store file directly, for stamping and inspecting.
func rawDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", dsn(path, nil))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

var spaces = regexp.MustCompile(`\s+`)

// schemaOf returns the store's schema as normalized sqlite_master rows plus
// its version, read through a read-only connection.
func schemaOf(t testing.TB, path string) (string, int) {
	t.Helper()
	db, err := openReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name`)
	if err != nil {
		t.Fatalf("read schema of %s: %v", path, err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var typ, name, tbl, sqlText string
		if err := rows.Scan(&typ, &name, &tbl, &sqlText); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %s on %s: %s\n", typ, name, tbl, strings.TrimSpace(spaces.ReplaceAllString(sqlText, " ")))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	v, err := readVersion(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return b.String(), v
}

type fileFact struct {
	Size  int64
	MTime time.Time
	Mode  os.FileMode
	Hash  string
}

// dirState fingerprints every file in dir: bytes, mtime and mode.
func dirState(t testing.TB, dir string) map[string]fileFact {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]fileFact{}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if fi.IsDir() {
			// A subdirectory (backups/) is fingerprinted file by file.
			for name, f := range dirState(t, filepath.Join(dir, e.Name())) {
				out[e.Name()+"/"+name] = f
			}
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		out[e.Name()] = fileFact{Size: fi.Size(), MTime: fi.ModTime(), Mode: fi.Mode(), Hash: hex.EncodeToString(sum[:])}
	}
	return out
}

func assertDirUnchanged(t testing.TB, what string, before, after map[string]fileFact) {
	t.Helper()
	if !reflect.DeepEqual(before, after) {
		t.Errorf("%s changed the store directory:\nbefore %v\nafter  %v", what, before, after)
	}
}

var vmSeq atomic.Int64

func testVM(name string) model.VM {
	seq := vmSeq.Add(1)
	return model.VM{
		Name: name, Image: "bookworm", Kernel: "debian-6.1", VMM: model.VMMQEMU, InitMode: model.InitFast,
		CPUs: 2, MemoryMiB: 1024, DiskBytes: 4 << 30, Dir: "/state/vms/" + name,
		MAC: fmt.Sprintf("02:00:00:00:%02x:%02x", seq/256%256, seq%256),
	}
}

func mustCreateVM(t testing.TB, s *Store, vm model.VM) model.VM {
	t.Helper()
	got, err := s.CreateVM(context.Background(), vm)
	if err != nil {
		t.Fatalf("CreateVM(%s): %v", vm.Name, err)
	}
	return got
}
