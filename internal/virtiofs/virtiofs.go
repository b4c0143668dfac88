// Package virtiofs shares a host directory with a guest through virtiofsd.
//
// Each share gets its own virtiofsd, started detached by the owner daemon
// (no root) inside new user and mount namespaces in which uid and gid 0 map
// to the owner: the guest is root in its VM and its requests reach
// virtiofsd as uid 0, so what it creates lands on the host owned by the
// owner, and it can touch nothing the owner could not. virtiofsd's switch
// to the guest caller's ids is made a no-op (a seccomp filter, see
// noCredSwitch), so the same holds for the guest's other users, whose ids
// are not mapped. virtiofsd's own
// sandbox (--sandbox=namespace: pivot_root into the shared directory) keeps
// the guest inside the share; a read-only share is a read-only bind mount
// made in the user namespace before virtiofsd starts (QEMU 7.2's virtiofsd
// has no read-only option), which the guest cannot undo.
package virtiofs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/vmm"
)

// DefaultBinary is where Debian's qemu-system-common puts virtiofsd.
const DefaultBinary = "/usr/lib/qemu/virtiofsd"

// SandboxArg is the first argument that makes the launcher binary (bangerd)
// run SandboxMain instead of its usual self.
const SandboxArg = "--virtiofs-sandbox"

// Share is one host directory shared with a guest.
type Share struct {
	Tag      string // the guest mounts by it
	Source   string // absolute, symlink-free host directory
	ReadOnly bool
}

// Config says how virtiofsd is run.
type Config struct {
	Binary   string // virtiofsd; default DefaultBinary
	Launcher string // the bangerd binary, re-run as the sandbox wrapper
	UID, GID int    // the owner: uid and gid 0 in the namespace map to them
}

var tagRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,35}$`)

// ValidTag reports whether tag is usable as a virtio-fs tag (at most 36
// bytes in the device's config) and inside QEMU's option syntax.
func ValidTag(tag string) bool { return tagRe.MatchString(tag) }

// CheckSource resolves dir to an absolute, symlink-free directory and
// checks, with the calling process's own credentials (the owner daemon
// runs as the owner), that it may be read and searched and, for a
// read-write share, written. The error says what is wrong and what to do.
func CheckSource(dir string, readOnly bool) (string, error) {
	if dir == "" {
		return "", errors.New("empty host directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("host directory %q: %w", dir, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("host directory %q: %w", dir, err)
	}
	st, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("host directory %q: %w", dir, err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("host path %q is not a directory: --mount shares directories", dir)
	}
	// faccessat2(AT_EACCESS) uses the effective ids, as virtiofsd will.
	if err := unix.Faccessat2(unix.AT_FDCWD, real, unix.R_OK|unix.X_OK, unix.AT_EACCESS); err != nil {
		return "", fmt.Errorf("host directory %q is not readable by you (%v): fix its permissions or share another directory", dir, err)
	}
	if !readOnly {
		if err := unix.Faccessat2(unix.AT_FDCWD, real, unix.W_OK, unix.AT_EACCESS); err != nil {
			return "", fmt.Errorf("host directory %q is not writable by you (%v): share it read-only (HOST:GUEST:ro) or fix its permissions", dir, err)
		}
	}
	return real, nil
}

// Start runs virtiofsd for share, serving the vhost-user socket at sock
// (made here; QEMU connects to it), its output appended to logPath. The
// process is detached: it outlives the caller's context and the daemon,
// and exits by itself when QEMU closes the connection.
func Start(ctx context.Context, cfg Config, share Share, sock, logPath string) (*vmm.Process, error) {
	if cfg.Binary == "" {
		cfg.Binary = DefaultBinary
	}
	if cfg.Launcher == "" {
		return nil, errors.New("start virtiofsd: no launcher binary configured")
	}
	if !ValidTag(share.Tag) {
		return nil, fmt.Errorf("start virtiofsd: tag %q: want 1-36 lower-case letters, digits, '-' or '_'", share.Tag)
	}
	if !filepath.IsAbs(share.Source) || filepath.Clean(share.Source) != share.Source {
		return nil, fmt.Errorf("start virtiofsd: source %q is not a clean absolute path", share.Source)
	}
	if st, err := os.Stat(share.Source); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("start virtiofsd: source %s is not a directory (%v)", share.Source, err)
	}
	if _, err := os.Stat(cfg.Binary); err != nil {
		return nil, fmt.Errorf("start virtiofsd: %w (install qemu-system-common)", err)
	}
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale virtiofs socket: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on virtiofs socket %s: %w", sock, err)
	}
	ln.SetUnlinkOnClose(false)
	lf, err := ln.File()
	ln.Close()
	if err != nil {
		os.Remove(sock)
		return nil, fmt.Errorf("virtiofs socket descriptor: %w", err)
	}
	defer lf.Close()
	ro := "rw"
	if share.ReadOnly {
		ro = "ro"
	}
	args := []string{SandboxArg, ro, share.Source, "--",
		cfg.Binary, "--fd=3", "-o", "source=" + share.Source,
		"-o", "sandbox=namespace", "-o", "no_xattr", "-o", "cache=auto",
		// Requests are served on the queue thread (no pool): fewer wake-ups
		// on a small, TCG-loaded host.
		"--rlimit-nofile=0", "--thread-pool-size=0", "-o", "log_level=warn"}
	p, err := vmm.StartDetached(vmm.Command{
		Path: cfg.Launcher, Args: args, LogPath: logPath,
		ExtraFiles: []*os.File{lf},
		UserNS:     &vmm.UserNS{UID: cfg.UID, GID: cfg.GID},
	})
	if err != nil {
		os.Remove(sock)
		return nil, fmt.Errorf("start virtiofsd for %s: %w", share.Source, err)
	}
	// virtiofsd accepts on the inherited socket once its sandbox is up; a
	// bad source or a refused namespace makes it exit at once.
	select {
	case <-p.Exited():
		os.Remove(sock)
		out, _ := vmm.TailFile(logPath, 10)
		return nil, fmt.Errorf("virtiofsd for %s exited at once (%v): %s", share.Source, p.ExitErr(), strings.TrimSpace(out))
	case <-time.After(150 * time.Millisecond):
	case <-ctx.Done():
		_ = vmm.KillAndWait(context.Background(), p.PID, p.StartTime, 5*time.Second)
		os.Remove(sock)
		return nil, ctx.Err()
	}
	return p, nil
}

// SandboxMain is the launcher's wrapper role: already uid 0 in its own user
// and mount namespaces, it makes the source a read-only bind mount when
// asked, then becomes virtiofsd. args: ro|rw SOURCE -- VIRTIOFSD ARGS...
func SandboxMain(args []string) int {
	if len(args) < 4 || args[2] != "--" || (args[0] != "ro" && args[0] != "rw") {
		fmt.Fprintln(os.Stderr, "virtiofs sandbox: usage: ro|rw SOURCE -- VIRTIOFSD ARGS...")
		return 2
	}
	if err := sandbox(args[0] == "ro", args[1]); err != nil {
		fmt.Fprintf(os.Stderr, "virtiofs sandbox: %v\n", err)
		return 1
	}
	if err := noCredSwitch(); err != nil {
		fmt.Fprintf(os.Stderr, "virtiofs sandbox: %v\n", err)
		return 1
	}
	err := syscall.Exec(args[3], args[3:], []string{"PATH=/usr/bin:/bin"})
	fmt.Fprintf(os.Stderr, "virtiofs sandbox: exec %s: %v\n", args[3], err)
	return 1
}

func sandbox(readOnly bool, src string) error {
	if os.Getuid() != 0 {
		return fmt.Errorf("not uid 0 in a user namespace (uid %d)", os.Getuid())
	}
	// Nothing done here may propagate back to the host's mounts.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if !readOnly {
		return nil
	}
	if err := unix.Mount(src, src, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(src, &fs); err != nil {
		return fmt.Errorf("statfs %s: %w", src, err)
	}
	// A remount must keep the flags the host locked on the mount.
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY)
	for st, ms := range map[int64]uintptr{
		unix.ST_NOSUID: unix.MS_NOSUID, unix.ST_NODEV: unix.MS_NODEV, unix.ST_NOEXEC: unix.MS_NOEXEC,
		unix.ST_NOATIME: unix.MS_NOATIME, unix.ST_NODIRATIME: unix.MS_NODIRATIME, unix.ST_RELATIME: unix.MS_RELATIME,
	} {
		if fs.Flags&st != 0 {
			flags |= ms
		}
	}
	if err := unix.Mount("", src, "", flags, ""); err != nil {
		return fmt.Errorf("make %s read-only: %w", src, err)
	}
	return nil
}
