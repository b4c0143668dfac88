// Package guestconfig is the per-VM configuration the host hands to the guest
// without kernel IP autoconfig and independent of the VMM: a small raw "config
// disk" (an extra virtio-blk device) holding a fixed header followed by JSON.
//
// Layout (little endian), one 512-byte header sector then the payload:
//
//	0   9  magic "BANGERCFG"
//	16  4  format version
//	20  4  payload length
//	24  32 sha256 of the payload
//	512 …  JSON payload, zero padded to a multiple of 512 bytes (disk ≥ 64 KiB)
package guestconfig

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path"
	"regexp"
	"strings"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/system"
)

const (
	// Magic opens every config disk; the guest finds its config disk by it.
	Magic = "BANGERCFG"
	// FormatVersion is bumped whenever the header or the JSON schema changes
	// incompatibly; host and guest agent come from the same build.
	FormatVersion = 1
	// HeaderSize is the fixed header: one sector, so the payload is aligned.
	HeaderSize = 512
	// MinDiskSize is the smallest disk written: VMMs dislike tiny disks.
	MinDiskSize = 64 << 10
	// MaxPayload bounds what a reader accepts from an untrusted disk.
	MaxPayload = 1 << 20
)

// Sentinel errors callers test with errors.Is.
var (
	ErrNotConfigDisk      = errors.New("not a banger config disk (magic missing)")
	ErrUnsupportedVersion = errors.New("unsupported config format version")
	ErrCorrupt            = errors.New("corrupt config disk")
	ErrInvalid            = errors.New("invalid guest config")
)

// Config is everything the guest needs to come up as this VM.
type Config struct {
	VMName         string         `json:"vm_name"`
	Hostname       string         `json:"hostname"`
	BootID         string         `json:"boot_id"`
	InitMode       model.InitMode `json:"init_mode"`
	Network        *Network       `json:"network,omitempty"` // nil: no network
	AuthorizedKeys []string       `json:"authorized_keys,omitempty"`
	Agent          Agent          `json:"agent"`
	// Modules are extra kernel modules loaded with the image's modprobe after
	// switching root.
	Modules []string `json:"modules,omitempty"`
	// Mounts are virtio-fs shares the guest mounts before it reports ready.
	Mounts []Mount `json:"mounts,omitempty"`
}

// Mount is one virtio-fs share: the device tagged Tag mounted at Path.
type Mount struct {
	Tag      string `json:"tag"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// Network is the guest's static address on the host bridge.
type Network struct {
	Address netip.Prefix `json:"address"` // e.g. 172.30.0.5/24
	Gateway netip.Addr   `json:"gateway"`
	DNS     []netip.Addr `json:"dns,omitempty"`
	MAC     string       `json:"mac"` // selects the interface
}

// Agent says where the guest agent listens.
type Agent struct {
	Transport model.AgentTransport `json:"transport"`
	PortName  string               `json:"port_name,omitempty"`  // virtio-serial port name, e.g. "banger.agent"
	VsockPort uint32               `json:"vsock_port,omitempty"` // vsock port
}

var (
	hostnameLabel = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)
	safeToken     = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$`)
	moduleName    = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)
	mountTag      = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,35}$`)
)

// Validate checks every field; both Write and Read call it, so a guest never
// acts on a config it cannot trust to be well formed.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.VMName != "" && !safeToken.MatchString(c.VMName) {
		bad("vm name %q has characters outside [a-zA-Z0-9._-]", c.VMName)
	}
	if !validHostname(c.Hostname) {
		bad("hostname %q is not a valid host name", c.Hostname)
	}
	if !safeToken.MatchString(c.BootID) {
		bad("boot id %q must be 1-128 characters of [a-zA-Z0-9._-]", c.BootID)
	}
	switch c.InitMode {
	case model.InitFast, model.InitImage:
	default:
		bad("init mode %q is not %q or %q", c.InitMode, model.InitFast, model.InitImage)
	}
	if n := c.Network; n != nil {
		if !n.Address.IsValid() {
			bad("network address is missing")
		}
		if n.Gateway.IsValid() && n.Address.IsValid() && n.Gateway.Is4() != n.Address.Addr().Is4() {
			bad("gateway %s and address %s are of different families", n.Gateway, n.Address)
		}
		for _, d := range n.DNS {
			if !d.IsValid() {
				bad("dns server address is invalid")
			}
		}
		if _, err := net.ParseMAC(n.MAC); err != nil {
			bad("mac %q: %v", n.MAC, err)
		}
	}
	for i, k := range c.AuthorizedKeys {
		if strings.TrimSpace(k) == "" || strings.ContainsAny(k, "\r\n\x00") {
			bad("authorized key %d is empty or spans lines", i)
		}
	}
	switch c.Agent.Transport {
	case model.TransportVirtioSerial:
		if !safeToken.MatchString(c.Agent.PortName) {
			bad("agent port name %q must be 1-128 characters of [a-zA-Z0-9._-]", c.Agent.PortName)
		}
	case model.TransportVsock:
		if c.Agent.VsockPort == 0 {
			bad("agent vsock port must be set")
		}
	default:
		bad("agent transport %q is not %q or %q", c.Agent.Transport, model.TransportVirtioSerial, model.TransportVsock)
	}
	for _, m := range c.Modules {
		if !moduleName.MatchString(m) {
			bad("module name %q is invalid", m)
		}
	}
	for _, m := range c.Mounts {
		if !mountTag.MatchString(m.Tag) {
			bad("mount tag %q is invalid", m.Tag)
		}
		if !path.IsAbs(m.Path) || path.Clean(m.Path) != m.Path || m.Path == "/" || strings.ContainsAny(m.Path, "\x00\n") {
			bad("mount path %q must be a clean absolute path other than /", m.Path)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	return nil
}

func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if !hostnameLabel.MatchString(label) {
			return false
		}
	}
	return true
}

// Encode renders cfg as a complete config disk image.
func Encode(cfg *Config) ([]byte, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encode guest config: %w", err)
	}
	if len(payload) > MaxPayload {
		return nil, fmt.Errorf("%w: payload of %d bytes exceeds %d", ErrInvalid, len(payload), MaxPayload)
	}
	size := max(roundUp(HeaderSize+len(payload), 512), MinDiskSize)
	disk := make([]byte, size)
	copy(disk, Magic)
	binary.LittleEndian.PutUint32(disk[16:], FormatVersion)
	binary.LittleEndian.PutUint32(disk[20:], uint32(len(payload)))
	sum := sha256.Sum256(payload)
	copy(disk[24:56], sum[:])
	copy(disk[HeaderSize:], payload)
	return disk, nil
}

// Write stores cfg as a config disk at path, atomically (temp file + rename).
func Write(path string, cfg *Config) error {
	disk, err := Encode(cfg)
	if err != nil {
		return fmt.Errorf("write guest config %s: %w", path, err)
	}
	if err := system.WriteFileAtomic(path, disk, 0o600); err != nil {
		return fmt.Errorf("write guest config: %w", err)
	}
	return nil
}

// HasMagic reports whether r starts with the config disk magic.
func HasMagic(r io.ReaderAt) bool {
	var b [len(Magic)]byte
	_, err := r.ReadAt(b[:], 0)
	return err == nil && string(b[:]) == Magic
}

// Read decodes and validates a config disk. A disk without the magic yields
// ErrNotConfigDisk, so callers can scan disks with it.
func Read(r io.ReaderAt) (*Config, error) {
	hdr := make([]byte, HeaderSize)
	if n, err := r.ReadAt(hdr, 0); n < 56 {
		if err == nil || errors.Is(err, io.EOF) {
			return nil, ErrNotConfigDisk
		}
		return nil, fmt.Errorf("read config header: %w", err)
	}
	if !bytes.Equal(hdr[:len(Magic)], []byte(Magic)) {
		return nil, ErrNotConfigDisk
	}
	if v := binary.LittleEndian.Uint32(hdr[16:]); v != FormatVersion {
		return nil, fmt.Errorf("%w: disk has %d, this agent reads %d", ErrUnsupportedVersion, v, FormatVersion)
	}
	n := binary.LittleEndian.Uint32(hdr[20:])
	if n == 0 || n > MaxPayload {
		return nil, fmt.Errorf("%w: payload length %d outside 1..%d", ErrCorrupt, n, MaxPayload)
	}
	payload := make([]byte, n)
	if _, err := r.ReadAt(payload, HeaderSize); err != nil {
		return nil, fmt.Errorf("%w: read %d payload bytes: %w", ErrCorrupt, n, err)
	}
	if sum := sha256.Sum256(payload); !bytes.Equal(sum[:], hdr[24:56]) {
		return nil, fmt.Errorf("%w: payload sha256 %x does not match header %x", ErrCorrupt, sum[:8], hdr[24:32])
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	var cfg Config
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("%w: decode json: %w", ErrCorrupt, err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// ReadFile reads the config disk at path (a file or a block device).
func ReadFile(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open config disk: %w", err)
	}
	defer f.Close()
	cfg, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("read config disk %s: %w", path, err)
	}
	return cfg, nil
}

func roundUp(n, to int) int { return (n + to - 1) / to * to }
