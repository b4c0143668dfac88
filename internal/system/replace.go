// Package system changes files of the system install safely: a binary is
// replaced by one rename (never a half-written file under its name) with the
// old one kept beside it as "<name>.previous" for rollback, and small files
// (install metadata, units) are written atomically.
package system

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// PreviousSuffix names the backup AtomicReplace keeps of the replaced file.
const PreviousSuffix = ".previous"

// ErrNoBackup reports a rollback for which no ".previous" file exists.
var ErrNoBackup = errors.New("no previous version to restore")

// PreviousPath is where AtomicReplace keeps the replaced version of dst.
func PreviousPath(dst string) string { return dst + PreviousSuffix }

// AtomicReplace installs a copy of src as dst. The copy is written and
// fsynced in a temporary file beside dst, the current dst is kept as
// dst.previous (a hard link, so dst never disappears), the temporary file is
// renamed over dst and the directory is fsynced. The new file takes src's
// permission bits (0755 for staged binaries). Parent directories are not
// created: a missing or non-directory parent is an error, leaving dst as it was.
func AtomicReplace(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("replace %s: open source: %w", dst, err)
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return fmt.Errorf("replace %s: stat source: %w", dst, err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("replace %s: source %s is not a regular file", dst, src)
	}
	if st, err := os.Lstat(dst); err == nil && !st.Mode().IsRegular() {
		return fmt.Errorf("replace %s: destination is not a regular file (%s)", dst, st.Mode().Type())
	}

	dir, err := openDir(filepath.Dir(dst))
	if err != nil {
		return fmt.Errorf("replace %s: %w", dst, err)
	}
	defer dir.Close()
	dfd, name := int(dir.Fd()), filepath.Base(dst)
	tmp, err := writeTempAt(dir, name, in, info.Mode().Perm())
	if err != nil {
		return fmt.Errorf("replace %s: %w", dst, err)
	}
	defer func() {
		if err != nil {
			_ = unix.Unlinkat(dfd, tmp, 0)
		}
	}()

	// A stale backup from an earlier update must not survive: after this
	// call dst.previous is exactly the version this call replaced, or absent.
	prev := name + PreviousSuffix
	if err := unix.Unlinkat(dfd, prev, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("replace %s: remove stale backup: %w", dst, err)
	}
	if err := unix.Linkat(dfd, name, dfd, prev, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("replace %s: keep previous version: %w", dst, err)
	}
	if err := unix.Renameat(dfd, tmp, dfd, name); err != nil {
		return fmt.Errorf("replace %s: move into place: %w", dst, err)
	}
	if err := syncDirFD(dir); err != nil {
		return fmt.Errorf("replace %s: %w", dst, err)
	}
	return nil
}

func openDir(path string) (*os.File, error) {
	d, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("open directory: %w", err)
	}
	return d, nil
}

// Rollback puts dst.previous back as dst, in one rename.
func Rollback(dst string) error {
	prev := PreviousPath(dst)
	if _, err := os.Lstat(prev); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("roll back %s: %w", dst, ErrNoBackup)
		}
		return fmt.Errorf("roll back %s: %w", dst, err)
	}
	if err := os.Rename(prev, dst); err != nil {
		return fmt.Errorf("roll back %s: %w", dst, err)
	}
	if err := SyncDir(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("roll back %s: %w", dst, err)
	}
	return nil
}

// RemoveBackup deletes dst.previous; a missing backup is not an error.
func RemoveBackup(dst string) error {
	if err := os.Remove(PreviousPath(dst)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove backup of %s: %w", dst, err)
	}
	return nil
}

// WriteFileAtomic writes data to path through a fsynced temporary file and a
// rename, creating the parent directory (0755) when missing.
func WriteFileAtomic(path string, data []byte, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: create directory: %w", path, err)
	}
	dir, err := openDir(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer dir.Close()
	return WriteFileAt(dir, filepath.Base(path), data, mode)
}

// CopyFileAtomic installs a copy of src at dst with the given mode, creating
// parent directories, without keeping a backup (fresh installs).
func CopyFileAtomic(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("install %s: open source: %w", dst, err)
	}
	defer in.Close()
	if info, err := in.Stat(); err != nil || !info.Mode().IsRegular() {
		return fmt.Errorf("install %s: source %s is not a readable regular file", dst, src)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("install %s: create directory: %w", dst, err)
	}
	if err := replaceWith(dst, in, mode); err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	return nil
}

// replaceWith writes r into a fsynced temporary file beside dst and renames
// it over dst; no backup is kept.
func replaceWith(dst string, r io.Reader, mode fs.FileMode) error {
	dir, err := openDir(filepath.Dir(dst))
	if err != nil {
		return err
	}
	defer dir.Close()
	return WriteAt(dir, filepath.Base(dst), r, mode)
}

// SyncDir fsyncs a directory so a rename in it survives a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
