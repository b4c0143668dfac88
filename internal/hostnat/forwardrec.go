package hostnat

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// forwardRecord keeps the ip_forward value found before banger turned
// forwarding on, so `network down` (even from a restarted helper) puts it
// back. It lives in a root-owned directory that nobody else may write (the
// root helper's state dir): a file the owner could plant would let it choose
// what root writes into the kernel's settings. One record per network
// namespace, keyed by the namespace's cookie (never reused while the
// machine runs; the directory is under /run, cleared at boot).
type forwardRecord struct {
	dir string // "" keeps the record in memory only
	mem string
}

// recordName names this network namespace's record file.
func recordName() (string, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("identify network namespace: %w", err)
	}
	defer unix.Close(fd)
	if cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE); err == nil {
		return "ip_forward.netns-" + strconv.FormatUint(cookie, 10), nil
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return "", fmt.Errorf("identify network namespace: %w", err)
	}
	return "ip_forward.netns-ino-" + strconv.FormatUint(st.Ino, 10), nil
}

// root opens the record directory (creating it when create is set), and
// refuses one that is not a real directory owned by root and writable by
// root alone. Without create, a missing directory is (nil, nil).
func (r *forwardRecord) root(create bool) (*os.Root, error) {
	if create {
		if err := os.MkdirAll(r.dir, 0o755); err != nil {
			return nil, fmt.Errorf("create state dir %s: %w", r.dir, err)
		}
	}
	root, err := os.OpenRoot(r.dir)
	if !create && errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open state dir %s: %w", r.dir, err)
	}
	fi, err := root.Stat(".")
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("stat state dir %s: %w", r.dir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid != uint32(os.Geteuid()) || fi.Mode().Perm()&0o022 != 0 {
		root.Close()
		return nil, fmt.Errorf("%w: state dir %s must be owned by uid %d and writable by it alone (mode %v)", ErrInvalidConfig, r.dir, os.Geteuid(), fi.Mode().Perm())
	}
	return root, nil
}

// load returns the recorded prior value, "" when there is none.
func (r *forwardRecord) load() (string, error) {
	if r.dir == "" {
		return r.mem, nil
	}
	name, err := recordName()
	if err != nil {
		return "", err
	}
	root, err := r.root(false)
	if err != nil || root == nil {
		return "", err
	}
	defer root.Close()
	b, err := root.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read ip forwarding record: %w", err)
	}
	v := strings.TrimSpace(string(b))
	if v != "0" && v != "1" && v != "2" {
		return "", fmt.Errorf("ip forwarding record %s/%s holds %q, not 0, 1 or 2: remove it", r.dir, name, printable(v))
	}
	return v, nil
}

// save records prior before forwarding is changed (crash-safe order).
func (r *forwardRecord) save(prior string) error {
	if r.dir == "" {
		r.mem = prior
		return nil
	}
	name, err := recordName()
	if err != nil {
		return err
	}
	root, err := r.root(true)
	if err != nil {
		return err
	}
	defer root.Close()
	tmp := name + ".tmp"
	if err := root.WriteFile(tmp, []byte(prior+"\n"), 0o600); err != nil {
		return fmt.Errorf("record ip forwarding: %w", err)
	}
	if err := root.Rename(tmp, name); err != nil {
		_ = root.Remove(tmp)
		return fmt.Errorf("record ip forwarding: %w", err)
	}
	return nil
}

// clear forgets the record once the prior value is back.
func (r *forwardRecord) clear() error {
	if r.dir == "" {
		r.mem = ""
		return nil
	}
	name, err := recordName()
	if err != nil {
		return err
	}
	root, err := r.root(false)
	if err != nil || root == nil {
		return err
	}
	defer root.Close()
	if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove ip forwarding record: %w", err)
	}
	return nil
}
