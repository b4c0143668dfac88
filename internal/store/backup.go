package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Before a migration changes a store, Open copies it (a consistent copy
// through SQLite, the WAL included) into backups/ beside it, named with
// both schema versions and the time, and keeps the newest KeepBackups. A
// damaged store is refused, and the message names the newest backup.

// KeepBackups is how many pre-migration backups are kept.
const KeepBackups = 3

// ErrCorrupt: the store file is damaged (truncated, overwritten); banger
// will not open it, so nothing is made worse.
var ErrCorrupt = errors.New("store is damaged")

// BackupDir is where the backups of the store at path are kept.
func BackupDir(path string) string { return filepath.Join(filepath.Dir(path), "backups") }

var backupName = regexp.MustCompile(`^(.+)-v([0-9]+)-before-v([0-9]+)-([0-9]{8}T[0-9]{6}\.[0-9]{9}Z)\.db$`)

// Backup is one pre-migration copy of a store.
type Backup struct {
	Path    string    `json:"path"`
	Version int       `json:"version"` // the schema version it holds
	Before  int       `json:"before"`  // the migration it was taken before
	TakenAt time.Time `json:"taken_at"`
}

// Backups lists the backups of the store at path, newest first.
func Backups(path string) ([]Backup, error) {
	ents, err := os.ReadDir(BackupDir(path))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list store backups: %w", err)
	}
	base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	var out []Backup
	for _, e := range ents {
		m := backupName.FindStringSubmatch(e.Name())
		if m == nil || m[1] != base || !e.Type().IsRegular() {
			continue
		}
		v, _ := strconv.Atoi(m[2])
		before, _ := strconv.Atoi(m[3])
		at, err := time.Parse("20060102T150405.000000000Z", m[4])
		if err != nil {
			continue
		}
		out = append(out, Backup{Path: filepath.Join(BackupDir(path), e.Name()), Version: v, Before: before, TakenAt: at})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TakenAt.After(out[j].TakenAt) })
	return out, nil
}

// backup copies the open store to the backup dir before migrating it from
// version cur to target, then prunes all but the newest KeepBackups.
func (s *Store) backup(ctx context.Context, cur, target int) (string, error) {
	dir := BackupDir(s.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("back up store: %w", err)
	}
	base := strings.TrimSuffix(filepath.Base(s.path), filepath.Ext(s.path))
	name := fmt.Sprintf("%s-v%d-before-v%d-%s.db", base, cur, target, s.now().UTC().Format("20060102T150405.000000000Z"))
	dst := filepath.Join(dir, name)
	// VACUUM INTO wants a missing or empty file: make it private first.
	f, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("back up store: %w", err)
	}
	_ = f.Close()
	fail := func(err error) (string, error) {
		_ = os.Remove(dst)
		return "", fmt.Errorf("back up store to %s (free space there, or move the store aside): %w", dst, err)
	}
	if _, err := s.db.ExecContext(ctx, "VACUUM INTO ?", dst); err != nil {
		return fail(err)
	}
	if f, err := os.Open(dst); err == nil {
		err = f.Sync()
		_ = f.Close()
		if err != nil {
			return fail(err)
		}
	}
	all, err := Backups(s.path)
	if err != nil {
		return dst, err
	}
	for _, b := range all[min(len(all), KeepBackups):] {
		if err := os.Remove(b.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.logger.Warn("prune store backup", "path", b.Path, "err", err)
		}
	}
	return dst, nil
}

// damaged wraps why a store cannot be read into ErrCorrupt with what to do.
func damaged(abs string, why error) error {
	hint := "move it aside to start empty (VM records are lost): banger daemon stop; mv " + abs + " " + abs + ".damaged"
	if bs, _ := Backups(abs); len(bs) > 0 {
		hint = fmt.Sprintf("restore the newest backup (schema %d, taken %s): banger daemon stop; rm -f %s-wal %s-shm; cp %s %s",
			bs[0].Version, bs[0].TakenAt.Format(time.RFC3339), abs, abs, bs[0].Path, abs)
	}
	return fmt.Errorf("%w: %s cannot be read (%v); banger leaves it as it is: %s", ErrCorrupt, abs, why, hint)
}

// quickCheck runs SQLite's quick_check on q: nil, or what is wrong.
func quickCheck(ctx context.Context, q querier) error {
	rows, err := q.QueryContext(ctx, "PRAGMA quick_check(5)")
	if err != nil {
		return err
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return err
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}
