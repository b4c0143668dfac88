package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"sync"
)

// The schema version lives in the database header as PRAGMA user_version:
// it needs no table of its own, is 0 in a new file, is readable from a
// read-only connection, and is written inside the same transaction as the
// migration it records, so a migration and its version bump commit together
// or not at all.

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one numbered schema step.
type migration struct {
	version int
	name    string // file name, for messages
	sql     string
}

var migrationName = regexp.MustCompile(`^([0-9]{4})_[a-z0-9_]+\.sql$`)

// loadMigrations reads NNNN_name.sql files from dir and insists that their
// numbers are unique and start at 1. A gap is allowed: numbers are handed
// out to work that lands separately, and a branch may carry a later number
// before the earlier ones are merged; the schema version is the highest
// number applied.
func loadMigrations(fsys fs.FS, dir string) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var migs []migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %q is not named NNNN_name.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		b, err := fs.ReadFile(fsys, dir+"/"+e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		migs = append(migs, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(migs, func(i, j int) bool { return migs[i].version < migs[j].version })
	for i, m := range migs {
		if i == 0 && m.version != 1 {
			return nil, fmt.Errorf("migration %s: the first migration must be version 1", m.name)
		}
		if i > 0 && m.version == migs[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s share version %d", migs[i-1].name, m.name, m.version)
		}
	}
	return migs, nil
}

// embeddedMigrations are the migrations built into this binary; a broken
// set is a build defect that the package tests catch.
var embeddedMigrations = sync.OnceValue(func() []migration {
	migs, err := loadMigrations(migrationFiles, "migrations")
	if err != nil {
		panic("store: embedded migrations: " + err.Error())
	}
	return migs
})

// LatestVersion is the schema version this binary migrates stores to.
func LatestVersion() int { return latestOf(embeddedMigrations()) }

// latestOf is the version a set of migrations brings a store to.
func latestOf(migs []migration) int {
	if len(migs) == 0 {
		return 0
	}
	return migs[len(migs)-1].version
}

// txBeginner is *sql.DB (the live store) or *sql.Conn (a dry-run copy).
type txBeginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// applyMigrations runs every migration above version from, each in its own
// transaction together with its user_version bump. A failure rolls back that
// migration alone: the store stays at the last version that applied whole.
func applyMigrations(ctx context.Context, db txBeginner, from int, migs []migration, logger *slog.Logger) error {
	for _, m := range migs {
		if m.version <= from {
			continue
		}
		if err := applyMigration(ctx, db, m); err != nil {
			return fmt.Errorf("migrate schema from %d to %d (%s): %w", m.version-1, m.version, m.name, err)
		}
		logger.Info("store schema migrated", "version", m.version, "migration", m.name)
	}
	return nil
}

func applyMigration(ctx context.Context, db txBeginner, m migration) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return err
	}
	// A migration that rebuilds a table can leave dangling references that
	// foreign_keys=ON does not catch inside a transaction: look before commit.
	rows, err := tx.QueryContext(ctx, "PRAGMA foreign_key_check")
	if err != nil {
		return fmt.Errorf("foreign key check: %w", err)
	}
	dangling := rows.Next()
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return fmt.Errorf("foreign key check: %w", err)
	}
	if dangling {
		return fmt.Errorf("foreign key check: the migration leaves rows referring to missing rows")
	}
	// PRAGMA takes no bound parameters; version is an int we own.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", m.version)); err != nil {
		return fmt.Errorf("set schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func readVersion(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (int, error) {
	var v int
	if err := q.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}
