package rpc

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/bangerdev/banger/internal/system"
	"golang.org/x/sys/unix"
)

// ListenOptions configure ListenUnix.
type ListenOptions struct {
	// Mode is the socket file's permission bits (0600 when zero).
	Mode fs.FileMode
	// UID and GID, when >= 0, own the socket file (root handing its socket
	// to the owner uid). -1 keeps the listener's own.
	UID, GID int
	// RootDir demands that the socket's directory be root-owned and
	// root-only writable all the way from / (created 0755 if missing):
	// privileged listeners must not bind where another user can swap
	// directories.
	RootDir bool
}

// ListenUnix binds a unix socket at path (a filesystem path, never
// abstract) and listens on it, with the socket file's mode and owner set
// before anyone can reach it. The process umask is never touched (it is
// process-wide, so flipping it races other threads) and the path is never
// looked up again after binding: the socket is bound inside a fresh 0700
// directory reached through a descriptor, its mode and owner are set
// relative to that descriptor, and it is renamed into place (atomically
// replacing a stale socket) before listen. A socket that answers means
// another server runs, which is an error. Close removes the socket file if
// it is still the one bound here.
func ListenUnix(path string, opts ListenOptions) (net.Listener, error) {
	if path == "" || path[0] == '@' || !filepath.IsAbs(path) {
		return nil, fmt.Errorf("socket %q must be an absolute filesystem path", path)
	}
	if opts.Mode == 0 {
		opts.Mode = 0o600
	}
	dirPath, name := filepath.Split(filepath.Clean(path))
	var dir *os.File
	var err error
	if opts.RootDir {
		dir, err = system.OpenRootDir(dirPath, true, 0o755)
	} else {
		if err = os.MkdirAll(dirPath, 0o700); err == nil {
			dir, err = os.OpenFile(dirPath, os.O_RDONLY|unix.O_DIRECTORY, 0)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open socket directory of %s: %w", path, err)
	}
	ln, err := listenIn(dir, name, opts)
	if err != nil {
		dir.Close()
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return ln, nil
}

func listenIn(dir *os.File, name string, opts ListenOptions) (net.Listener, error) {
	dfd := int(dir.Fd())
	via := func(fd int, n string) string { return fmt.Sprintf("/proc/self/fd/%d/%s", fd, n) }
	if c, err := net.Dial("unix", via(dfd, name)); err == nil {
		c.Close()
		return nil, errors.New("another server already listens on it")
	}
	tmpName := "." + name + ".bind-" + fmt.Sprint(os.Getpid())
	_ = unix.Unlinkat(dfd, tmpName+"/s", 0) // left by a crashed earlier try
	_ = unix.Unlinkat(dfd, tmpName, unix.AT_REMOVEDIR)
	if err := unix.Mkdirat(dfd, tmpName, 0o700); err != nil {
		return nil, fmt.Errorf("create private bind directory: %w", err)
	}
	defer unix.Unlinkat(dfd, tmpName, unix.AT_REMOVEDIR)
	tfd, err := unix.Openat(dfd, tmpName, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open private bind directory: %w", err)
	}
	defer unix.Close(tfd)
	sfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create socket: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(sfd)
			_ = unix.Unlinkat(tfd, "s", 0)
		}
	}()
	if err := unix.Bind(sfd, &unix.SockaddrUnix{Name: via(tfd, "s")}); err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	if err := unix.Fchmodat(tfd, "s", uint32(opts.Mode.Perm()), 0); err != nil {
		return nil, fmt.Errorf("set socket mode: %w", err)
	}
	if opts.UID >= 0 || opts.GID >= 0 {
		if err := unix.Fchownat(tfd, "s", opts.UID, opts.GID, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return nil, fmt.Errorf("give socket to uid %d gid %d: %w", opts.UID, opts.GID, err)
		}
	}
	var st unix.Stat_t
	if err := unix.Fstatat(tfd, "s", &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, fmt.Errorf("stat bound socket: %w", err)
	}
	if err := unix.Renameat(tfd, "s", dfd, name); err != nil {
		return nil, fmt.Errorf("move socket into place: %w", err)
	}
	if err := unix.Listen(sfd, unix.SOMAXCONN); err != nil {
		_ = unlinkIfSame(dfd, name, st)
		return nil, fmt.Errorf("listen: %w", err)
	}
	f := os.NewFile(uintptr(sfd), name)
	ln, err := net.FileListener(f)
	f.Close()
	ok = true // sfd is closed by f.Close; FileListener holds a dup
	if err != nil {
		_ = unlinkIfSame(dfd, name, st)
		return nil, fmt.Errorf("wrap socket: %w", err)
	}
	return &unixListener{Listener: ln, dir: dir, name: name, st: st}, nil
}

// unixListener removes its socket file on Close, through the directory
// descriptor and only if the file is still the socket bound here.
type unixListener struct {
	net.Listener
	dir  *os.File
	name string
	st   unix.Stat_t
	once sync.Once
}

func (l *unixListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() {
		_ = unlinkIfSame(int(l.dir.Fd()), l.name, l.st)
		l.dir.Close()
	})
	return err
}

func unlinkIfSame(dfd int, name string, want unix.Stat_t) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if st.Dev != want.Dev || st.Ino != want.Ino {
		return nil
	}
	return unix.Unlinkat(dfd, name, 0)
}
