package model

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
)

// Snapshot kinds.
const (
	SnapshotKindSnapshot = "snapshot" // banger vm snapshot
	SnapshotKindTemplate = "template" // banger template create
)

// Snapshot is a VM's memory, device state and root disk captured at one
// instant, from which new VMs are forked.
type Snapshot struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	Kind       string   `json:"kind"`
	SourceVM   string   `json:"source_vm"`
	SourceVMID string   `json:"source_vm_id"`
	Image      string   `json:"image"`
	Kernel     string   `json:"kernel"`
	VMM        VMMKind  `json:"vmm"`
	CPUs       int      `json:"cpus"`
	MemoryMiB  int      `json:"memory_mib"`
	DiskBytes  int64    `json:"disk_bytes"`
	InitMode   InitMode `json:"init_mode"`
	Network    string   `json:"network"`
	Policy     VMPolicy `json:"policy,omitzero"`
	BootID     string   `json:"boot_id"` // what the source's agent answered with
	MAC        string   `json:"mac,omitempty"`
	Dir        string   `json:"dir"`
	StateBytes int64    `json:"state_bytes"`
	StateSHA   string   `json:"state_sha256"`
	DiskAlloc  int64    `json:"disk_alloc_bytes"` // blocks the disk copy takes
	// MemoryBytes and MemorySHA describe the guest RAM file when the
	// snapshot keeps memory apart (clones map it copy-on-write); then the
	// state file holds the devices only. Zero: RAM is in the state.
	MemoryBytes int64     `json:"memory_bytes,omitempty"`
	MemorySHA   string    `json:"memory_sha256,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	// Users are the VMs forked from it (filled by lookups that ask).
	Users []string `json:"users,omitempty"`
}

// ValidateSnapshotName checks a snapshot or template name: the VM name rules.
func ValidateSnapshotName(name string) error {
	const allowed = "a snapshot name is 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
	return validateName("snapshot", name, maxVMNameLen, "-", allowed)
}

// NewSnapshotID returns a random id.
func NewSnapshotID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate snapshot id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
