// Package store is banger's state: one SQLite database per user holding VMs,
// images, kernels, address leases, guest sessions, pinned host keys and host
// network objects, with embedded, numbered schema migrations.
//
// The database runs in WAL mode with foreign keys on. Readers run in
// parallel; writers are serialized by a mutex in the Store and take SQLite's
// write lock up front (BEGIN IMMEDIATE), so a write never fails with
// SQLITE_BUSY half-way through a transaction and another process's writer
// is waited for (busy_timeout) rather than reported.
//
// The schema version is PRAGMA user_version, bumped in the same transaction
// as the migration it records (see migrate.go). Check is the read-only
// pre-update dry run behind `bangerd --check-migrations`.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Sentinel errors callers test with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	// ErrSchemaTooNew: the store was written by a newer banger.
	ErrSchemaTooNew = errors.New("store schema is newer than this banger")
)

// busyTimeout bounds how long a statement waits for another process's lock.
const busyTimeout = 10 * time.Second

// poolSize is how many SQLite connections the store holds, all opened by
// Open and kept until Close. SQLite cannot close a connection's descriptor
// while another connection of the process holds a lock on the file (POSIX
// locks are per process): it parks it for reuse instead. A pool that grew
// with a burst of requests and shrank after it therefore left the process
// holding a descriptor per connection the burst had opened. A fixed pool
// keeps the count flat; callers past poolSize wait for a connection (reads
// take microseconds, writes are serialized anyway).
const poolSize = 4

// Store is safe for concurrent use by many goroutines.
type Store struct {
	db      *sql.DB
	path    string
	logger  *slog.Logger
	now     func() time.Time
	writeMu sync.Mutex
	// observer hears committed VM changes (the daemon's event bus).
	observer VMObserver
}

// options is the test seam behind Open.
type options struct {
	migrations []migration      // nil: the embedded ones; empty non-nil: none
	now        func() time.Time // nil: time.Now
}

// Open opens the store at path, creating it (mode 0600) if missing, and
// migrates it to LatestVersion. A store written by a newer banger is refused
// with ErrSchemaTooNew before anything is written to it.
func Open(ctx context.Context, path string, logger *slog.Logger) (*Store, error) {
	return openWith(ctx, path, logger, options{})
}

func openWith(ctx context.Context, path string, logger *slog.Logger, opts options) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	migs := opts.migrations
	if migs == nil {
		migs = embeddedMigrations()
	}
	now := opts.now
	if now == nil {
		now = time.Now
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	latest := latestOf(migs)

	// Look before touching: a newer banger's store must come out of this
	// byte-for-byte as it went in.
	// A damaged one is refused the same way, before SQLite could "repair"
	// anything in it.
	if fi, err := os.Stat(abs); err == nil && fi.Size() > 0 {
		cur, err := probeVersion(ctx, abs)
		if err != nil {
			return nil, fmt.Errorf("open store %s: %w", abs, err)
		}
		if cur > latest {
			return nil, tooNew(abs, cur, latest)
		}
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}

	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("create store directory: %w", err)
	}
	// SQLite would create the file with the umask's mode; the store holds
	// host keys and paths, so make it private first. An empty file is a
	// valid empty database.
	if f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
		_ = f.Close()
	} else if !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create store %s: %w", abs, err)
	}

	db, err := sql.Open("sqlite", dsn(abs, url.Values{
		"_pragma": {
			fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()),
			"foreign_keys(1)",
		},
		"_txlock": {"immediate"},
	}))
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	db.SetMaxOpenConns(poolSize)
	db.SetMaxIdleConns(poolSize)
	s := &Store{db: db, path: abs, logger: logger, now: now}
	if err := s.init(ctx, migs); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	if err := s.fillPool(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	return s, nil
}

// fillPool opens every connection of the pool now, each with its WAL, so
// the store's descriptors are the same from the first request to the last.
func (s *Store) fillPool(ctx context.Context) error {
	conns := make([]*sql.Conn, 0, poolSize)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range poolSize {
		c, err := s.db.Conn(ctx)
		if err != nil {
			return fmt.Errorf("open connection: %w", err)
		}
		conns = append(conns, c)
		var v int
		if err := c.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
			return fmt.Errorf("open connection: %w", err)
		}
	}
	return nil
}

func (s *Store) init(ctx context.Context, migs []migration) error {
	var mode string
	if err := s.db.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return fmt.Errorf("enable wal: %w", err)
	}
	if mode != "wal" {
		return fmt.Errorf("enable wal: journal mode is %q", mode)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	cur, err := readVersion(ctx, s.db)
	if err != nil {
		return err
	}
	latest := latestOf(migs)
	if cur > latest {
		return tooNew(s.path, cur, latest)
	}
	if cur < latest {
		s.logger.Info("store schema out of date", "path", s.path, "current", cur, "target", latest)
	}
	if cur > 0 && cur < latest {
		// A store with something in it is copied before it is changed.
		b, err := s.backup(ctx, cur, latest)
		if err != nil {
			return err
		}
		s.logger.Info("store backed up before migrating", "backup", b, "keep", KeepBackups)
	}
	return applyMigrations(ctx, s.db, cur, migs, s.logger)
}

func tooNew(path string, cur, latest int) error {
	restore := "restore the store from a backup taken before the upgrade"
	bs, _ := Backups(path)
	for _, b := range bs {
		if b.Version <= latest {
			restore = fmt.Sprintf("restore the backup taken before it migrated the store (schema %d): banger daemon stop; rm -f %s-wal %s-shm; cp %s %s",
				b.Version, path, path, b.Path, path)
			break
		}
	}
	return fmt.Errorf("%w: %s is at schema version %d, this banger knows versions up to %d; "+
		"a newer banger wrote it: upgrade banger to that release or later, or %s",
		ErrSchemaTooNew, path, cur, latest, restore)
}

// dsn builds a modernc.org/sqlite URI for an absolute path; the URL form
// escapes any '?', '#' or '%' in the path.
func dsn(abs string, q url.Values) string {
	return (&url.URL{Scheme: "file", Path: abs, RawQuery: q.Encode()}).String()
}

// Close closes the database; a clean close checkpoints the WAL into the
// main file.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", s.path, err)
	}
	return nil
}

// Path is the store's absolute file path.
func (s *Store) Path() string { return s.path }

// SchemaVersion reports the store's current schema version.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	return readVersion(ctx, s.db)
}

// write runs fn in a write transaction, one at a time.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// isConstraint reports whether err is a UNIQUE or PRIMARY KEY violation.
func isConstraint(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	c := se.Code()
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// isCorrupt reports whether err is SQLite saying the file is no database
// or a damaged one.
func isCorrupt(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	c := se.Code() & 0xff
	return c == sqlite3.SQLITE_CORRUPT || c == sqlite3.SQLITE_NOTADB
}

// isForeignKey reports whether err is a FOREIGN KEY violation.
func isForeignKey(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}
