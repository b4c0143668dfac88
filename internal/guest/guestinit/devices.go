package guestinit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestconfig"
)

// Errors for conditions the boot waits on.
var (
	ErrNoConfigDisk = errors.New("no virtio disk carries the banger config magic")
	ErrNoRootDisk   = errors.New("no virtio disk without the config magic to use as root")
	ErrNoAgentPort  = errors.New("virtio-serial port not found")
)

// sysfs locates devices without udev: sysRoot is "/sys" and devRoot "/dev"
// in the guest, temp dirs in tests.
type sysfs struct {
	sysRoot string
	devRoot string
}

// disks are the guest's config and root block devices.
type disks struct {
	config string // /dev/vdX holding the guest config
	root   string // /dev/vdY to mount as /
}

// virtioDisks lists /sys/block/vd* in the kernel's naming order (vda … vdz,
// vdaa …), which is the order the VMM attached them.
func (s sysfs) virtioDisks() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(s.sysRoot, "block"))
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "vd") {
			names = append(names, e.Name())
		}
	}
	slices.SortFunc(names, func(a, b string) int {
		if len(a) != len(b) {
			return len(a) - len(b)
		}
		return strings.Compare(a, b)
	})
	return names, nil
}

// findDisks applies the rule: the config disk is the first virtio disk whose
// first bytes carry guestconfig.Magic; the root disk is the first virtio disk
// without it (vda by convention).
func (s sysfs) findDisks() (disks, error) {
	names, err := s.virtioDisks()
	if err != nil {
		return disks{}, err
	}
	var d disks
	for _, name := range names {
		dev := filepath.Join(s.devRoot, name)
		f, err := os.Open(dev)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // devtmpfs has not made the node yet
			}
			return disks{}, fmt.Errorf("open %s: %w", dev, err)
		}
		magic := guestconfig.HasMagic(f)
		f.Close()
		switch {
		case magic && d.config == "":
			d.config = dev
		case !magic && d.root == "":
			d.root = dev
		}
	}
	if d.config == "" {
		return d, ErrNoConfigDisk
	}
	if d.root == "" {
		return d, ErrNoRootDisk
	}
	return d, nil
}

// agentPort maps a virtio-serial port name to its device node, as udev's
// /dev/virtio-ports/<name> symlink would.
func (s sysfs) agentPort(name string) (string, error) {
	dir := filepath.Join(s.sysRoot, "class", "virtio-ports")
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("list virtio ports: %w", err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "name"))
		if err != nil {
			continue // a port without a name
		}
		if strings.TrimSpace(string(b)) == name {
			dev := filepath.Join(s.devRoot, e.Name())
			if _, err := os.Stat(dev); err != nil {
				return "", fmt.Errorf("%w: %s is %s but %v", ErrNoAgentPort, name, e.Name(), err)
			}
			return dev, nil
		}
	}
	return "", fmt.Errorf("%w: no port named %q in %s", ErrNoAgentPort, name, dir)
}

// poll retries fn every interval until it succeeds or timeout passes, and
// returns fn's last error. Devices appear asynchronously after module load.
func poll[T any](timeout, interval time.Duration, fn func() (T, error)) (T, error) {
	deadline := time.Now().Add(timeout)
	for {
		v, err := fn()
		if err == nil || time.Now().After(deadline) {
			return v, err
		}
		time.Sleep(interval)
	}
}
