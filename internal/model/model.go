// Package model holds the plain records shared by the daemon, the store and
// the CLI: VMs, images, kernels, leases, guest sessions, pinned host keys and
// host network objects. It does no I/O.
package model

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Network modes: an isolated VM reaches only the host (and through it the
// outside); shared VMs also reach each other.
const (
	NetworkIsolated = "isolated"
	NetworkShared   = "shared"
)

// VMPolicy is what a VM may expose and reach beyond the defaults, as the
// user set it (create flags merged over config.toml's [policy]); package
// policy validates and applies it. Overrides only ever deny more.
type VMPolicy struct {
	DenyEgress  []string `json:"deny_egress,omitempty"`  // IPv4 CIDRs the host drops for the VM's traffic
	DenyPrivate bool     `json:"deny_private,omitempty"` // also drop RFC 1918 and 100.64.0.0/10 (not the VM's own subnet)
	ForwardDeny []int    `json:"forward_deny,omitempty"` // guest ports vm forward refuses
}

// VM is one microVM as the daemon records it.
type VM struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	State       VMState  `json:"state"`
	StateReason string   `json:"state_reason,omitempty"`
	Image       string   `json:"image"`
	Kernel      string   `json:"kernel"`
	VMM         VMMKind  `json:"vmm"`
	CPUs        int      `json:"cpus"`
	MemoryMiB   int      `json:"memory_mib"`
	DiskBytes   int64    `json:"disk_bytes"`
	InitMode    InitMode `json:"init_mode"`
	Network     string   `json:"network"` // NetworkIsolated or NetworkShared
	Policy      VMPolicy `json:"policy,omitzero"`
	// Mounts are host directories shared with the VM; Workdir is where
	// vm exec and vm run start commands when not told (--workspace).
	Mounts  []Mount `json:"mounts,omitempty"`
	Workdir string  `json:"workdir,omitempty"`
	// Origin is who asked for the VM: OriginMCP or "" (any other client).
	Origin string `json:"origin,omitempty"`
	BootID string `json:"boot_id,omitempty"`
	Dir    string `json:"dir"`
	IP     string `json:"ip,omitempty"`
	MAC    string `json:"mac,omitempty"`
	Tap    string `json:"tap,omitempty"`
	PID    int    `json:"pid,omitempty"`
	// PIDStartTime is field 22 of /proc/PID/stat (clock ticks since boot):
	// together with PID it tells a re-adopted VMM from a recycled pid.
	PIDStartTime  uint64    `json:"pid_start_time,omitempty"`
	ControlSocket string    `json:"control_socket,omitempty"`
	AgentSocket   string    `json:"agent_socket,omitempty"`
	ConsoleLog    string    `json:"console_log,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	StartedAt     time.Time `json:"started_at,omitzero"`
	// Publish is which guest ports are forwarded to the host's loopback
	// while the VM runs; Forwards the live ones (runtime, not stored).
	Publish  VMPublish `json:"publish,omitzero"`
	Forwards []Forward `json:"forwards,omitempty"`
}

// OriginMCP marks VMs created through `banger mcp`: the daemon counts them
// against the [mcp] limits.
const OriginMCP = "mcp"

// Validate checks the fields a stored VM must always have right.
func (v VM) Validate() error {
	if err := ValidateVMID(v.ID); err != nil {
		return fmt.Errorf("vm %q: %w", v.Name, err)
	}
	if err := ValidateVMName(v.Name); err != nil {
		return err
	}
	if !v.State.Valid() {
		return fmt.Errorf("vm %q: unknown state %q", v.Name, v.State)
	}
	if !v.VMM.Valid() {
		return fmt.Errorf("vm %q: unknown vmm %q (want %q or %q)", v.Name, v.VMM, VMMQEMU, VMMFirecracker)
	}
	if !v.InitMode.Valid() {
		return fmt.Errorf("vm %q: unknown init mode %q (want %q or %q)", v.Name, v.InitMode, InitFast, InitImage)
	}
	switch v.Network {
	case NetworkIsolated, NetworkShared:
	default:
		return fmt.Errorf("vm %q: unknown network mode %q (want %q or %q)", v.Name, v.Network, NetworkIsolated, NetworkShared)
	}
	if v.CPUs < 0 || v.MemoryMiB < 0 || v.DiskBytes < 0 || v.PID < 0 {
		return fmt.Errorf("vm %q: cpus, memory, disk size and pid must not be negative", v.Name)
	}
	return nil
}

// NewVMID returns a fresh random VM id: 16 lower-case hex digits. Short
// enough to appear in tap and directory names, long enough never to collide
// on one host.
func NewVMID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate vm id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// ValidateVMID checks that id is 1–64 lower-case hex digits: ids become
// directory and device names, so nothing else may pass.
func ValidateVMID(id string) error {
	if id == "" || len(id) > 64 || strings.Trim(id, "0123456789abcdef") != "" {
		return fmt.Errorf("%w: vm id %q is not 1-64 lower-case hex digits", ErrInvalidName, id)
	}
	return nil
}

// Image is a root filesystem image (ext4) ready to be copied into a VM.
type Image struct {
	Name string `json:"name"`
	// Source says where it came from: "debootstrap:bookworm", "oci:REF",
	// "import:PATH".
	Source    string    `json:"source"`
	Digest    string    `json:"digest"` // sha256 of the ext4 file, hex
	SizeBytes int64     `json:"size_bytes"`
	Path      string    `json:"path"`
	CreatedAt time.Time `json:"created_at"`
}

// Kernel is a guest kernel with its modules.
type Kernel struct {
	Name    string `json:"name"`
	Release string `json:"release"`
	Source  string `json:"source"`
	SHA256  string `json:"sha256"` // of the vmlinuz file, hex
	Path    string `json:"path"`   // vmlinuz (bzImage) for QEMU
	// VMLinux is the uncompressed ELF kernel Firecracker needs; empty when
	// the kernel has none.
	VMLinux    string    `json:"vmlinux,omitempty"`
	ModulesDir string    `json:"modules_dir,omitempty"`
	VMMs       []VMMKind `json:"vmms"` // drivers this kernel is known to boot under
	CreatedAt  time.Time `json:"created_at"`
}

// Lease is one guest IP address handed to a VM.
type Lease struct {
	IP        string    `json:"ip"`
	VMID      string    `json:"vm_id"`
	MAC       string    `json:"mac"`
	CreatedAt time.Time `json:"created_at"`
}

// GuestSession is one command run in a guest through the agent.
type GuestSession struct {
	ID        string     `json:"id"`
	VMID      string     `json:"vm_id"`
	OpID      string     `json:"op_id,omitempty"`
	Command   []string   `json:"command"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	ExitCode  *int       `json:"exit_code,omitempty"`
}

// HostKey is a guest SSH host key pinned on first use.
type HostKey struct {
	VMID      string    `json:"vm_id"`
	Algorithm string    `json:"algorithm"` // e.g. "ssh-ed25519"
	Key       string    `json:"key"`       // authorized_keys form: "ssh-ed25519 AAAA…"
	PinnedAt  time.Time `json:"pinned_at"`
}

// Kinds of host network objects the daemon creates through the root helper.
const (
	NetTap      = "tap"
	NetBridge   = "bridge"
	NetNFTTable = "nft-table"
)

// NetObject records a host network object banger created, so that one left
// behind by a crash can be found and removed.
type NetObject struct {
	Kind      string    `json:"kind"`
	Name      string    `json:"name"`
	VMID      string    `json:"vm_id,omitempty"` // empty for shared objects (bridge, NAT table)
	CreatedAt time.Time `json:"created_at"`
}
