package agentproto

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
)

// Snapshot and clone methods. A snapshot quiesces the guest's filesystems
// (fs.freeze) around the moment its memory and disk are captured; a clone
// restored from that memory is a copy of the source until the host hands
// it its own identity (system.reidentify), which is the first thing the
// host asks of it.
const (
	MethodFreeze     = "fs.freeze"
	MethodThaw       = "fs.thaw"
	MethodReidentify = "system.reidentify"
)

// Freeze is fs.freeze's request: the guest thaws by itself after
// AutoThawSeconds if no fs.thaw came (a host that died mid-snapshot must not
// leave the guest's root filesystem frozen).
type Freeze struct {
	AutoThawSeconds int `json:"auto_thaw_seconds"`
}

// Identity is system.reidentify's request: everything a clone must not
// share with its source. The guest takes it as given by the host, after
// checking its form.
type Identity struct {
	// BootID is the id health answers with from now on: the host's handshake
	// with this VM (clones share the kernel's boot_id, not this).
	BootID    string `json:"boot_id"`
	Hostname  string `json:"hostname"`
	MachineID string `json:"machine_id"` // 32 lower-case hex digits
	// Entropy is mixed into the guest's CRNG, which is then reseeded, before
	// anything else: a clone's CRNG state is its source's.
	Entropy []byte `json:"entropy"`
	// OldMAC selects the interface; MAC, Address and Gateway are its new
	// identity. Empty OldMAC: the VM has no network.
	OldMAC  string       `json:"old_mac,omitempty"`
	MAC     string       `json:"mac,omitempty"`
	Address netip.Prefix `json:"address,omitzero"`
	Gateway netip.Addr   `json:"gateway,omitzero"`
}

// Reidentified is system.reidentify's answer: what the guest now is, for
// the host to pin (SSH host key).
type Reidentified struct {
	SSHHostKeys []string `json:"ssh_host_keys,omitempty"` // authorized_keys form
}

var (
	idPattern        = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	machineIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)
	hostnamePattern  = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,62})$`)
)

// Validate checks the identity's form.
func (id Identity) Validate() error {
	switch {
	case !idPattern.MatchString(id.BootID):
		return fmt.Errorf("boot_id %q is not a uuid", id.BootID)
	case !hostnamePattern.MatchString(id.Hostname):
		return fmt.Errorf("hostname %q is not a valid host name", id.Hostname)
	case !machineIDPattern.MatchString(id.MachineID):
		return fmt.Errorf("machine_id %q is not 32 hex digits", id.MachineID)
	case len(id.Entropy) < 32 || len(id.Entropy) > 512:
		return fmt.Errorf("entropy of %d bytes, want 32..512", len(id.Entropy))
	}
	if id.OldMAC == "" {
		return nil
	}
	if _, err := net.ParseMAC(id.OldMAC); err != nil {
		return fmt.Errorf("old mac: %w", err)
	}
	if _, err := net.ParseMAC(id.MAC); err != nil {
		return fmt.Errorf("mac: %w", err)
	}
	if !id.Address.IsValid() || !id.Address.Addr().Is4() {
		return fmt.Errorf("address %v is not an IPv4 prefix", id.Address)
	}
	return nil
}
