// Package installmeta reads and writes /etc/banger/install.toml: who owns a
// system install of banger and which build is installed. `banger system
// install` writes it; `banger update` refreshes the build fields.
package installmeta

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/bangerdev/banger/internal/system"
)

// ErrNotInstalled reports that install.toml does not exist: banger is not
// installed system-wide.
var ErrNotInstalled = errors.New("banger is not installed system-wide")

// maxSize bounds what Read accepts; the file is a handful of lines.
const maxSize = 64 << 10

// Meta is the content of install.toml.
type Meta struct {
	OwnerUser   string    `toml:"owner_user"`
	OwnerUID    int       `toml:"owner_uid"`
	OwnerGID    int       `toml:"owner_gid"`
	OwnerHome   string    `toml:"owner_home"`
	Version     string    `toml:"version"`
	Commit      string    `toml:"commit"`
	BuiltAt     string    `toml:"built_at"`
	InstalledAt time.Time `toml:"installed_at"`
	// The root helper's host network (its --subnet and --bridge); empty
	// means the helper's defaults. Files written before these existed
	// lack them.
	NetworkSubnet string `toml:"network_subnet,omitempty"`
	NetworkBridge string `toml:"network_bridge,omitempty"`
	// The root helper's jailer settings (its --firecracker-binary and
	// --jailer-* flags), from root's [firecracker] at install; empty means
	// the helper's defaults.
	FirecrackerBinary   string `toml:"firecracker_binary,omitempty"`
	JailerBinary        string `toml:"jailer_binary,omitempty"`
	JailerUIDStart      int    `toml:"jailer_uid_start,omitempty"`
	JailerUIDCount      int    `toml:"jailer_uid_count,omitempty"`
	JailerCgroupVersion string `toml:"jailer_cgroup_version,omitempty"`
	JailerChrootBase    string `toml:"jailer_chroot_base,omitempty"`
}

// HelperNetworkArgs returns the root helper flags for the recorded network
// settings: none when both are empty.
func (m Meta) HelperNetworkArgs() []string {
	var args []string
	if m.NetworkSubnet != "" {
		args = append(args, "--subnet", m.NetworkSubnet)
	}
	if m.NetworkBridge != "" {
		args = append(args, "--bridge", m.NetworkBridge)
	}
	return args
}

// HelperJailerArgs returns the root helper flags for the recorded jailer
// settings: one per set field.
func (m Meta) HelperJailerArgs() []string {
	var args []string
	for _, f := range []struct{ flag, v string }{
		{"--firecracker-binary", m.FirecrackerBinary},
		{"--jailer-binary", m.JailerBinary},
		{"--jailer-uid-start", itoa(m.JailerUIDStart)},
		{"--jailer-uid-count", itoa(m.JailerUIDCount)},
		{"--jailer-cgroup-version", m.JailerCgroupVersion},
		{"--jailer-chroot-base", m.JailerChrootBase},
	} {
		if f.v != "" {
			args = append(args, f.flag, f.v)
		}
	}
	return args
}

// HelperArgs returns every recorded root helper flag: the network's, then
// the jailer's.
func (m Meta) HelperArgs() []string {
	return append(m.HelperNetworkArgs(), m.HelperJailerArgs()...)
}

func itoa(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

// Validate checks the fields every reader relies on.
func (m Meta) Validate() error {
	switch {
	case m.OwnerUser == "":
		return errors.New("owner_user is empty")
	case m.OwnerUID < 0 || m.OwnerGID < 0:
		return fmt.Errorf("owner uid/gid %d/%d is negative", m.OwnerUID, m.OwnerGID)
	case m.Version == "":
		return errors.New("version is empty")
	}
	return nil
}

// Read parses install.toml at path. A missing file is ErrNotInstalled.
func Read(path string) (Meta, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Meta{}, fmt.Errorf("read %s: %w", path, ErrNotInstalled)
		}
		return Meta{}, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxSize {
		return Meta{}, fmt.Errorf("read %s: file is larger than %d bytes", path, maxSize)
	}
	var m Meta
	if err := toml.NewDecoder(bytes.NewReader(data)).Decode(&m); err != nil {
		return Meta{}, fmt.Errorf("parse %s: %w", path, err)
	}
	if err := m.Validate(); err != nil {
		return Meta{}, fmt.Errorf("parse %s: %w", path, err)
	}
	return m, nil
}

// Write replaces install.toml at path atomically (mode 0644: the CLI of any
// user reads the owner and version from it).
func Write(path string, m Meta) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	m.InstalledAt = m.InstalledAt.UTC().Truncate(time.Second)
	var buf bytes.Buffer
	buf.WriteString("# Written by banger system install; refreshed by banger update.\n")
	if err := toml.NewEncoder(&buf).Encode(m); err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return system.WriteFileAtomic(path, buf.Bytes(), 0o644)
}

// UpdateBuildInfo refreshes only Version, Commit and BuiltAt, keeping the
// owner fields, the network settings and the original InstalledAt.
func UpdateBuildInfo(path, version, commit, builtAt string) error {
	m, err := Read(path)
	if err != nil {
		return fmt.Errorf("update build info: %w", err)
	}
	m.Version, m.Commit, m.BuiltAt = version, commit, builtAt
	if err := Write(path, m); err != nil {
		return fmt.Errorf("update build info: %w", err)
	}
	return nil
}
