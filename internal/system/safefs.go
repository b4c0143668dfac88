package system

// Descriptor-based file operations for privileged code. Root never looks a
// path up twice and never follows a symlink in a directory another user can
// write: it holds a descriptor of a directory it trusts and resolves names
// beneath it with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS).

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrUntrustedDir reports a directory (or one of its ancestors) that a user
// other than root could change: owned by someone else, or writable by group
// or others without the sticky bit.
var ErrUntrustedDir = errors.New("directory is not root-owned and root-only writable")

const resolveStrict = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// OpenRootDir opens the absolute directory path for use as a trusted anchor:
// every component from / down is a real directory (no symlink), owned by
// root and writable by root only (a root-owned sticky directory such as /tmp
// is accepted: others cannot rename what root put there). With create set,
// missing components are made root-owned with mode.
func OpenRootDir(path string, create bool, mode fs.FileMode) (*os.File, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("open trusted directory %q: not an absolute path", path)
	}
	// O_PATH needs only search permission, so an unprivileged reader of a
	// root-owned run directory can anchor on it too.
	const dirFlags = unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Open("/", dirFlags, 0)
	if err != nil {
		return nil, fmt.Errorf("open /: %w", err)
	}
	if err := checkRootOwned(fd, "/"); err != nil {
		unix.Close(fd)
		return nil, err
	}
	walked := "/"
	for _, comp := range strings.Split(strings.Trim(filepath.Clean(path), "/"), "/") {
		if comp == "" {
			continue
		}
		walked = filepath.Join(walked, comp)
		next, err := unix.Openat(fd, comp, dirFlags, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if err = unix.Mkdirat(fd, comp, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
				unix.Close(fd)
				return nil, fmt.Errorf("create %s: %w", walked, err)
			}
			// The parent is trusted, so nobody can swap the new directory
			// before its mode is set (umask aside).
			if err = unix.Fchmodat(fd, comp, uint32(mode.Perm()), 0); err == nil {
				next, err = unix.Openat(fd, comp, dirFlags, 0)
			}
		}
		unix.Close(fd)
		if err != nil {
			if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
				return nil, fmt.Errorf("open trusted directory %s: %s is a symlink or not a directory: %w", path, walked, ErrUntrustedDir)
			}
			return nil, fmt.Errorf("open trusted directory %s: %w", walked, err)
		}
		fd = next
		if err := checkRootOwned(fd, walked); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("open trusted directory %s: %w", path, err)
		}
	}
	// Readable when we may read it (so it can be fsynced), else the O_PATH
	// descriptor, which serves every *at call.
	if rd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
		unix.Close(fd)
		fd = rd
	}
	return os.NewFile(uintptr(fd), path), nil
}

func checkRootOwned(fd int, name string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", name, err)
	}
	if st.Uid != 0 {
		return fmt.Errorf("%s is owned by uid %d: %w", name, st.Uid, ErrUntrustedDir)
	}
	if st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0 {
		return fmt.Errorf("%s has mode %#o: %w", name, st.Mode&0o7777, ErrUntrustedDir)
	}
	return nil
}

// OpenBeneath opens rel under dir with openat2 RESOLVE_BENEATH and
// RESOLVE_NO_SYMLINKS: no symlink (in any component), no "..", no magic
// link is followed, so a name planted by another user cannot redirect it.
func OpenBeneath(dir *os.File, rel string, flags int, mode fs.FileMode) (*os.File, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: resolveStrict}
	if flags&(unix.O_CREAT|unix.O_TMPFILE) != 0 {
		how.Mode = uint64(mode.Perm())
	}
	fd, err := unix.Openat2(int(dir.Fd()), rel, &how)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
			return nil, fmt.Errorf("open %s beneath %s: a component is a symlink or leaves the directory: %w", rel, dir.Name(), err)
		}
		return nil, fmt.Errorf("open %s beneath %s: %w", rel, dir.Name(), err)
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir.Name(), rel)), nil
}

// MkdirBeneath creates each component of rel under dir (mode, then chown to
// uid/gid when uid >= 0) without following symlinks, and returns the last
// directory open. An existing component is accepted only if it is a real
// directory; its owner and mode are set through its descriptor, never by
// path.
func MkdirBeneath(dir *os.File, rel string, mode fs.FileMode, uid, gid int) (*os.File, error) {
	cur := dir
	for _, comp := range strings.Split(filepath.Clean(rel), "/") {
		if comp == "" || comp == "." {
			continue
		}
		if comp == ".." {
			return nil, fmt.Errorf("create %s beneath %s: \"..\" is not allowed", rel, dir.Name())
		}
		if err := unix.Mkdirat(int(cur.Fd()), comp, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			closeUnless(cur, dir)
			return nil, fmt.Errorf("create %s: %w", filepath.Join(cur.Name(), comp), err)
		}
		next, err := OpenBeneath(cur, comp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		if err != nil {
			var st unix.Stat_t
			if serr := unix.Fstatat(int(cur.Fd()), comp, &st, unix.AT_SYMLINK_NOFOLLOW); serr == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				err = fmt.Errorf("%s is a symlink, refused: remove it (%w)", filepath.Join(cur.Name(), comp), ErrUntrustedDir)
			}
		}
		closeUnless(cur, dir)
		if err != nil {
			return nil, fmt.Errorf("create %s beneath %s: %w", rel, dir.Name(), err)
		}
		if uid >= 0 {
			if err := unix.Fchown(int(next.Fd()), uid, gid); err != nil {
				next.Close()
				return nil, fmt.Errorf("give %s to uid %d: %w", next.Name(), uid, err)
			}
		}
		if err := unix.Fchmod(int(next.Fd()), uint32(mode.Perm())); err != nil {
			next.Close()
			return nil, fmt.Errorf("set mode of %s: %w", next.Name(), err)
		}
		cur = next
	}
	if cur == dir {
		return nil, fmt.Errorf("create %q beneath %s: empty name", rel, dir.Name())
	}
	return cur, nil
}

func closeUnless(f, keep *os.File) {
	if f != keep {
		f.Close()
	}
}

// OpenAppendAt opens (creating with mode) the regular file name in dir for
// appending (and reading back, for error tails), refusing a symlink, a non-regular file and a file with more
// than one link (a hard link planted to a file elsewhere).
func OpenAppendAt(dir *os.File, name string, mode fs.FileMode) (*os.File, error) {
	f, err := OpenBeneath(dir, name, unix.O_RDWR|unix.O_CREAT|unix.O_APPEND|unix.O_NOFOLLOW|unix.O_NONBLOCK, mode)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		f.Close()
		return nil, fmt.Errorf("open %s: not a regular file with a single link", f.Name())
	}
	return f, nil
}

// WriteFileAt writes data to name in dir atomically (see WriteAt).
func WriteFileAt(dir *os.File, name string, data []byte, mode fs.FileMode) error {
	return WriteAt(dir, name, bytes.NewReader(data), mode)
}

// WriteAt writes r to name in dir atomically: a new file beside it
// (O_EXCL, never following a symlink), fsynced, with mode set through its
// descriptor, renamed over name, then the directory is fsynced. Nothing
// is looked up by path, so dir may be any trusted descriptor. This is
// banger's one atomic writer: every other one goes through it.
func WriteAt(dir *os.File, name string, r io.Reader, mode fs.FileMode) error {
	tmp, err := writeTempAt(dir, name, r, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(dir.Name(), name), err)
	}
	dfd := int(dir.Fd())
	if err := unix.Renameat(dfd, tmp, dfd, name); err != nil {
		_ = unix.Unlinkat(dfd, tmp, 0)
		return fmt.Errorf("write %s: move into place: %w", filepath.Join(dir.Name(), name), err)
	}
	if err := syncDirFD(dir); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(dir.Name(), name), err)
	}
	return nil
}

// writeTempAt copies r into a new fsynced file with mode beside name in
// dir and returns its name; nothing is left behind on failure.
func writeTempAt(dir *os.File, name string, r io.Reader, mode fs.FileMode) (string, error) {
	if name == "" || strings.Contains(name, "/") || name == "." || name == ".." {
		return "", fmt.Errorf("%q is not a plain file name", name)
	}
	dfd := int(dir.Fd())
	tmp := "." + name + ".new-" + randSuffix()
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return "", fmt.Errorf("create temporary file: %w", err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	werr := func() error {
		if _, err := io.Copy(f, r); err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		if err := unix.Fchmod(fd, uint32(mode.Perm())); err != nil {
			return fmt.Errorf("set mode: %w", err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		return nil
	}()
	if cerr := f.Close(); werr == nil && cerr != nil {
		werr = fmt.Errorf("close: %w", cerr)
	}
	if werr != nil {
		_ = unix.Unlinkat(dfd, tmp, 0)
		return "", werr
	}
	return tmp, nil
}

// syncDirFD fsyncs a directory descriptor; an O_PATH one cannot be synced
// and is reopened for reading first.
func syncDirFD(dir *os.File) error {
	err := unix.Fsync(int(dir.Fd()))
	if errors.Is(err, unix.EBADF) {
		var fd int
		if fd, err = unix.Openat(int(dir.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			err = unix.Fsync(fd)
			unix.Close(fd)
		}
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir.Name(), err)
	}
	return nil
}

func randSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
