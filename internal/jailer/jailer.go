// Package jailer holds the settings of Firecracker's jailer ([firecracker]
// in config.toml, the root helper's --jailer-* flags) and the host checks
// the jailer needs: root-owned binaries, a uid range no real user has, the
// cgroup version. The root helper (which launches the jailer), the
// Firecracker driver and doctor share it; it depends on nothing of banger's
// so the helper's import graph stays small.
package jailer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Defaults. The uid range sits above systemd-nspawn's automatic range
// (524288-1879048191) and below 2^31, which some tools mishandle.
const (
	DefaultFirecrackerBinary = "/usr/local/bin/firecracker"
	DefaultJailerBinary      = "/usr/local/bin/jailer"
	DefaultUIDStart          = 1900000000
	DefaultUIDCount          = 1024
	DefaultCgroupVersion     = "2"
	// DefaultChrootBase is root-owned and persistent: the root disk is
	// hard-linked into the jail, so it must share a filesystem with the
	// owner's VM dirs (a tmpfs such as /run never does).
	DefaultChrootBase = "/var/lib/banger/jailer"

	maxUIDCount = 65536
	maxUID      = 1<<32 - 2 // (uid_t)-1 means "unchanged"
)

// ErrInvalid is wrapped by every settings error.
var ErrInvalid = errors.New("invalid firecracker settings")

// Config is the jailer's settings.
type Config struct {
	FirecrackerBinary string `toml:"binary" json:"binary"`               // the exec file the jailer copies into the jail
	JailerBinary      string `toml:"jailer_binary" json:"jailer_binary"` // run as root by the helper
	UIDStart          int    `toml:"uid_start" json:"uid_start"`         // first uid (and gid) of the per-VM range
	UIDCount          int    `toml:"uid_count" json:"uid_count"`         // how many VMs may run at once
	CgroupVersion     string `toml:"cgroup_version" json:"cgroup_version"`
	ChrootBase        string `toml:"chroot_base" json:"chroot_base"` // root-owned; jails are <base>/<exec file name>/<vm id>/root
}

// Default returns the built-in settings.
func Default() Config {
	return Config{FirecrackerBinary: DefaultFirecrackerBinary, JailerBinary: DefaultJailerBinary,
		UIDStart: DefaultUIDStart, UIDCount: DefaultUIDCount, CgroupVersion: DefaultCgroupVersion, ChrootBase: DefaultChrootBase}
}

// WithDefaults fills zero fields from Default.
func (c Config) WithDefaults() Config {
	d := Default()
	if c.FirecrackerBinary == "" {
		c.FirecrackerBinary = d.FirecrackerBinary
	}
	if c.JailerBinary == "" {
		c.JailerBinary = d.JailerBinary
	}
	if c.UIDStart == 0 && c.UIDCount == 0 {
		c.UIDStart, c.UIDCount = d.UIDStart, d.UIDCount
	}
	if c.CgroupVersion == "" {
		c.CgroupVersion = d.CgroupVersion
	}
	if c.ChrootBase == "" {
		c.ChrootBase = d.ChrootBase
	}
	return c
}

// Validate checks the settings' shape (no filesystem access).
func (c Config) Validate() error {
	var errs []error
	for _, b := range []struct{ key, path string }{{"firecracker.binary", c.FirecrackerBinary}, {"firecracker.jailer_binary", c.JailerBinary}} {
		if !filepath.IsAbs(b.path) || filepath.Clean(b.path) != b.path {
			errs = append(errs, fmt.Errorf("%s %q must be a clean absolute path (the root helper runs it: no PATH lookup)", b.key, b.path))
		}
	}
	if c.UIDCount < 1 || c.UIDCount > maxUIDCount {
		errs = append(errs, fmt.Errorf("firecracker.uid_count %d must be between 1 and %d", c.UIDCount, maxUIDCount))
	}
	if c.UIDStart < 1000 || int64(c.UIDStart)+int64(c.UIDCount)-1 > maxUID {
		errs = append(errs, fmt.Errorf("firecracker.uid_start %d must be at least 1000 and leave room for uid_count below %d (pick a range no user or subuid range has, e.g. %d)", c.UIDStart, int64(maxUID), DefaultUIDStart))
	}
	if c.CgroupVersion != "1" && c.CgroupVersion != "2" {
		errs = append(errs, fmt.Errorf("firecracker.cgroup_version %q must be \"1\" or \"2\"", c.CgroupVersion))
	}
	if !filepath.IsAbs(c.ChrootBase) || filepath.Clean(c.ChrootBase) != c.ChrootBase || c.ChrootBase == "/" {
		errs = append(errs, fmt.Errorf("firecracker.chroot_base %q must be a clean absolute path other than /", c.ChrootBase))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// InRange reports whether id is one of the range's uids.
func (c Config) InRange(id int) bool { return id >= c.UIDStart && id < c.UIDStart+c.UIDCount }

// ExecName is the jail's directory under the chroot base: the jailer names
// it after the exec file.
func (c Config) ExecName() string { return filepath.Base(c.FirecrackerBinary) }

// JailDir is <base>/<exec name>/<id>; the chroot is its "root".
func (c Config) JailDir(id string) string { return filepath.Join(c.ChrootBase, c.ExecName(), id) }

// Args is the jailer's command line (without argv[0]) for VM id run as
// uid/gid, Firecracker serving its API at /api.sock in the jail. No
// --daemonize (the helper starts it detached itself) and no --cgroup
// values (the helper moves it into the VM's own cgroup).
func (c Config) Args(id string, uid, gid int) []string {
	return []string{"--id", id, "--exec-file", c.FirecrackerBinary,
		"--uid", strconv.Itoa(uid), "--gid", strconv.Itoa(gid),
		"--chroot-base-dir", c.ChrootBase, "--cgroup-version", c.CgroupVersion,
		"--", "--api-sock", "/api.sock"}
}

// CheckRootBinary checks that p is a regular, executable file that only
// root can change: owned by root, not group- or world-writable, in
// directories likewise. Root executes it, so anyone who could rewrite it
// would run code as root.
func CheckRootBinary(p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file (a symlink is refused: name the file itself)", p)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid != 0 {
		return fmt.Errorf("%s is not owned by root (chown root:root %s)", p, p)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is writable by group or others (chmod go-w %s)", p, p)
	}
	if fi.Mode().Perm()&0o100 == 0 {
		return fmt.Errorf("%s is not executable (chmod 0755 %s)", p, p)
	}
	return CheckRootDir(filepath.Dir(p))
}

// CheckRootDir checks that every directory from dir up to / is owned by
// root and not writable by others (unless sticky, as /tmp): nobody but
// root can redirect a path under it.
func CheckRootDir(dir string) error {
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", p)
		}
		if st.Uid != 0 {
			return fmt.Errorf("%s is owned by uid %d, not root", p, st.Uid)
		}
		if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0 {
			return fmt.Errorf("%s is writable by group or others and not sticky", p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// TakenIDs reads the numeric ids (third field) of an /etc/passwd or
// /etc/group style file. A missing file has none.
func TakenIDs(path string) (map[int]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[int]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[int]string{}
	sc := bufio.NewScanner(io.LimitReader(f, 64<<20))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 4)
		if len(parts) < 3 {
			continue
		}
		if n, err := strconv.Atoi(parts[2]); err == nil {
			out[n] = parts[0]
		}
	}
	return out, sc.Err()
}

// CheckRange refuses a uid range in which /etc/passwd names a user or
// /etc/group a group: a jailed Firecracker would run as them.
func (c Config) CheckRange(passwd, group string) error {
	for _, f := range []struct{ path, what string }{{passwd, "user"}, {group, "group"}} {
		ids, err := TakenIDs(f.path)
		if err != nil {
			return fmt.Errorf("read %s: %w", f.path, err)
		}
		for id, name := range ids {
			if c.InRange(id) {
				return fmt.Errorf("%s %q (%s) has id %d, inside the jailer range %d-%d: move firecracker.uid_start", f.what, name, f.path, id, c.UIDStart, c.UIDStart+c.UIDCount-1)
			}
		}
	}
	return nil
}

// HostCgroupVersion says which cgroup version mountinfo shows at
// /sys/fs/cgroup: "2" for the unified hierarchy, "1" for v1 or hybrid.
func HostCgroupVersion(mountinfo string) (string, error) {
	b, err := os.ReadFile(mountinfo)
	if err != nil {
		return "", err
	}
	v := ""
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		a, f := strings.Fields(pre), strings.Fields(post)
		if !ok || len(a) < 5 || len(f) < 1 {
			continue
		}
		switch {
		case a[4] == "/sys/fs/cgroup" && f[0] == "cgroup2":
			return "2", nil
		case strings.HasPrefix(a[4], "/sys/fs/cgroup") && (f[0] == "cgroup" || f[0] == "tmpfs"):
			v = "1"
		}
	}
	if v == "" {
		return "", errors.New("no cgroup filesystem is mounted at /sys/fs/cgroup")
	}
	return v, nil
}
