package model

import "fmt"

// VMPublish is which guest TCP ports the daemon forwards to 127.0.0.1 on
// the host while the VM runs (create/run --publish-all, -p HOST:GUEST).
// The zero value publishes nothing.
type VMPublish struct {
	// All forwards every guest TCP listener the VM's policy allows.
	All   bool      `json:"all,omitempty"`
	Ports []PortMap `json:"ports,omitempty"`
}

// PortMap publishes one guest port on a host port (0: the guest's).
type PortMap struct {
	Host  int `json:"host"`
	Guest int `json:"guest"`
}

// MaxPublish bounds a VM's explicit -p mappings.
const MaxPublish = 64

// Validate checks port ranges and duplicates.
func (p VMPublish) Validate() error {
	if len(p.Ports) > MaxPublish {
		return fmt.Errorf("%d published ports: at most %d", len(p.Ports), MaxPublish)
	}
	seenHost, seenGuest := map[int]bool{}, map[int]bool{}
	for _, m := range p.Ports {
		if m.Guest < 1 || m.Guest > 65535 {
			return fmt.Errorf("guest port %d is not within 1..65535", m.Guest)
		}
		if m.Host < 0 || m.Host > 65535 {
			return fmt.Errorf("host port %d is not within 1..65535", m.Host)
		}
		if seenGuest[m.Guest] {
			return fmt.Errorf("guest port %d is published twice", m.Guest)
		}
		if m.Host != 0 && seenHost[m.Host] {
			return fmt.Errorf("host port %d is used twice", m.Host)
		}
		seenGuest[m.Guest], seenHost[m.Host] = true, true
	}
	return nil
}

// Forward is one live forward of a published port (runtime state, filled
// in by the daemon, never stored).
type Forward struct {
	Host      string `json:"host"` // 127.0.0.1:PORT
	GuestPort int    `json:"guest_port"`
	// Note says why the host port is not the one asked for.
	Note string `json:"note,omitempty"`
}
