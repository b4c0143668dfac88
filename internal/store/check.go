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
	"strings"
)

// CheckResult says whether Open would migrate a store, without opening it
// for writing. It is what `bangerd --check-migrations` prints before an
// update swaps binaries.
type CheckResult struct {
	Path         string `json:"path"`
	Current      int    `json:"current"` // 0 for a store that does not exist yet
	Target       int    `json:"target"`
	WouldSucceed bool   `json:"would_succeed"`
	Reason       string `json:"reason,omitempty"` // why not, when !WouldSucceed
}

// String renders the result for people, one fact a line.
func (r CheckResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "store: %s\ncurrent schema: %d\ntarget schema: %d\n", r.Path, r.Current, r.Target)
	if r.WouldSucceed {
		b.WriteString("migrate: ok")
	} else {
		b.WriteString("migrate: would fail: " + r.Reason)
	}
	return b.String()
}

// Check reports whether Open would bring the store at path to
// LatestVersion. It never creates or writes the file: it reads it read-only,
// copies it into memory and applies the pending migrations to the copy.
// A missing file is reported as version 0, checked against an empty
// database. The error is non-nil only when the check itself could not be
// carried out (for instance the context ended); a store Open would refuse
// comes back as WouldSucceed=false with the Reason.
func Check(ctx context.Context, path string) (CheckResult, error) {
	return checkWith(ctx, path, embeddedMigrations())
}

func checkWith(ctx context.Context, path string, migs []migration) (CheckResult, error) {
	res := CheckResult{Path: path, Target: latestOf(migs)}
	abs, err := filepath.Abs(path)
	if err != nil {
		return res, fmt.Errorf("check store %s: %w", path, err)
	}
	res.Path = abs
	fail := func(format string, args ...any) (CheckResult, error) {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("check store %s: %w", abs, err)
		}
		res.Reason = fmt.Sprintf(format, args...)
		return res, nil
	}

	var image []byte // the store's content; nil: start from an empty database
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fail("stat store: %v", err)
	case !fi.Mode().IsRegular():
		return fail("%s is not a regular file", abs)
	case fi.Size() > 0:
		res.Current, image, err = snapshot(ctx, abs)
		if isCorrupt(err) {
			return fail("%v", damaged(abs, err))
		}
		if err != nil {
			return fail("%v", err)
		}
	}
	if res.Current > res.Target {
		return fail("%v", tooNew(abs, res.Current, res.Target))
	}

	mem, err := sql.Open("sqlite", "file::memory:")
	if err != nil {
		return res, fmt.Errorf("check store %s: open in-memory copy: %w", abs, err)
	}
	defer mem.Close()
	conn, err := mem.Conn(ctx) // a :memory: database lives in one connection
	if err != nil {
		return res, fmt.Errorf("check store %s: open in-memory copy: %w", abs, err)
	}
	defer conn.Close()
	if image != nil {
		if err := conn.Raw(func(dc any) error {
			d, ok := dc.(interface{ Deserialize([]byte) error })
			if !ok {
				return fmt.Errorf("sqlite driver %T cannot deserialize", dc)
			}
			return d.Deserialize(image)
		}); err != nil {
			return res, fmt.Errorf("check store %s: load in-memory copy: %w", abs, err)
		}
	}
	if image != nil {
		if err := quickCheck(ctx, conn); err != nil {
			return fail("%v", damaged(abs, err))
		}
	}
	if _, err := conn.ExecContext(ctx, "PRAGMA foreign_keys = ON"); err != nil {
		return res, fmt.Errorf("check store %s: %w", abs, err)
	}
	if err := applyMigrations(ctx, conn, res.Current, migs, slog.New(slog.DiscardHandler)); err != nil {
		return fail("%v", err)
	}
	res.WouldSucceed = true
	return res, nil
}

// snapshot reads the store's schema version and a serialized copy of its
// content (WAL included) through a read-only connection.
func snapshot(ctx context.Context, abs string) (version int, image []byte, err error) {
	db, err := openReadOnly(abs)
	if err != nil {
		return 0, nil, err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("read store: %w", err)
	}
	defer conn.Close()
	// One read transaction, so the version and the copy agree even while a
	// running daemon writes.
	if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
		return 0, nil, fmt.Errorf("read store: %w", err)
	}
	defer func() { _, _ = conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK") }()
	if version, err = readVersion(ctx, conn); err != nil {
		return 0, nil, err
	}
	err = conn.Raw(func(dc any) error {
		s, ok := dc.(interface{ Serialize() ([]byte, error) })
		if !ok {
			return fmt.Errorf("sqlite driver %T cannot serialize", dc)
		}
		image, err = s.Serialize()
		return err
	})
	if err != nil {
		return 0, nil, fmt.Errorf("copy store: %w", err)
	}
	if len(image) < 100 {
		return 0, nil, fmt.Errorf("copy store: %d bytes is no sqlite database", len(image))
	}
	// The header's read/write format bytes say WAL (2); the in-memory copy
	// cannot do WAL, so mark it as a rollback-journal database (1).
	image[18], image[19] = 1, 1
	return version, image, nil
}

// probeVersion reads the schema version without writing anything, and
// checks the file is a sound database (ErrCorrupt, naming the newest
// backup, if not).
func probeVersion(ctx context.Context, abs string) (int, error) {
	db, err := openReadOnly(abs)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	v, err := readVersion(ctx, db)
	if isCorrupt(err) {
		return 0, damaged(abs, err)
	}
	if err != nil {
		return 0, err
	}
	if err := quickCheck(ctx, db); err != nil {
		return 0, damaged(abs, err)
	}
	return v, nil
}

// openReadOnly opens the store so that nothing is written, not even beside
// it. A store in use by a daemon has its -wal and -shm files; reading it
// read-only shares them. A store nobody has open has no -wal file; SQLite
// would create -wal and -shm to read it and, being read-only, leave them
// behind, so it is read as immutable instead (nothing writes it meanwhile:
// the daemon that could is not running).
func openReadOnly(abs string) (*sql.DB, error) {
	q := url.Values{"mode": {"ro"}}
	if _, err := os.Stat(abs + "-wal"); errors.Is(err, os.ErrNotExist) {
		q.Set("immutable", "1")
	}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	db, err := sql.Open("sqlite", dsn(abs, q))
	if err != nil {
		return nil, fmt.Errorf("open store read-only: %w", err)
	}
	return db, nil
}
