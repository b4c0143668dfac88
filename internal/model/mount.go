package model

import (
	"fmt"
	"path"
	"strings"
)

// Mount is a host directory shared with a VM (virtio-fs, QEMU only),
// mounted in the guest at Target.
type Mount struct {
	Source   string `json:"source"` // absolute, symlink-free host directory
	Target   string `json:"target"` // absolute guest path
	ReadOnly bool   `json:"read_only,omitempty"`
	Tag      string `json:"tag"` // the virtio-fs tag the guest mounts by
}

// MaxMounts bounds how many directories one VM may share.
const MaxMounts = 8

// ParseMount reads --mount's HOST_DIR[:GUEST_DIR][:ro|:rw]; Target stays
// empty without GUEST_DIR (the same path as the host's, once absolute).
// Paths are checked for form only; the daemon checks the host directory.
func ParseMount(spec string) (Mount, error) {
	parts := strings.Split(spec, ":")
	m := Mount{}
	if n := len(parts); n > 1 && (parts[n-1] == "ro" || parts[n-1] == "rw") {
		m.ReadOnly = parts[n-1] == "ro"
		parts = parts[:n-1]
	}
	switch len(parts) {
	case 1:
		m.Source = parts[0]
	case 2:
		m.Source, m.Target = parts[0], parts[1]
	default:
		return m, fmt.Errorf("mount %q: want HOST_DIR[:GUEST_DIR][:ro] (paths may not contain ':')", spec)
	}
	if m.Source == "" {
		return m, fmt.Errorf("mount %q: empty host directory", spec)
	}
	if len(parts) == 2 && m.Target == "" {
		return m, fmt.Errorf("mount %q: empty guest directory", spec)
	}
	return m, nil
}

// ValidateGuestPath checks a guest mount point: absolute, clean, not / and
// not under the guest's kernel file systems.
func ValidateGuestPath(p string) error {
	if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
		return fmt.Errorf("guest path %q: want a clean absolute path other than /", p)
	}
	if len(p) > 1024 || strings.ContainsAny(p, "\x00\n,") {
		return fmt.Errorf("guest path %q: too long or contains a newline, comma or NUL", p)
	}
	for _, bad := range []string{"/proc", "/sys", "/dev", "/run", "/etc/banger"} {
		if p == bad || strings.HasPrefix(p, bad+"/") {
			return fmt.Errorf("guest path %q: %s is the guest system's own: mount somewhere else", p, bad)
		}
	}
	return nil
}
