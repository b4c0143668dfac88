package model

import "strings"

// The enumerations below are defined here once and used by every package that
// means the same thing: records and their validation, config.toml, the kernel
// catalog's compatibility lists, driver selection, the guest's config disk and
// the guest binary's flags. Their string values are on disk and on the wire:
// never change one.

// VMMKind names a virtual machine monitor driver.
type VMMKind string

const (
	VMMQEMU        VMMKind = "qemu"
	VMMFirecracker VMMKind = "firecracker"
	// VMMAuto is a preference only (config.toml, --vmm): the daemon picks a
	// driver for it. No VM, snapshot or kernel record ever holds it.
	VMMAuto VMMKind = "auto"
)

// VMMKinds are the concrete drivers, in the order auto tries them.
var VMMKinds = []VMMKind{VMMFirecracker, VMMQEMU}

// Valid reports whether k is a concrete driver (not auto).
func (k VMMKind) Valid() bool { return k == VMMQEMU || k == VMMFirecracker }

// ValidPreference reports whether k may be asked for: a driver, auto or "".
func (k VMMKind) ValidPreference() bool { return k == "" || k == VMMAuto || k.Valid() }

// InitMode selects how the guest boots: fast keeps banger's init as PID 1
// (sshd + agent only, the default); image hands off to the image's own
// /sbin/init (systemd) with the agent as a service.
type InitMode string

const (
	InitFast  InitMode = "fast"
	InitImage InitMode = "image"
)

// Valid reports whether m is a known init mode.
func (m InitMode) Valid() bool { return m == InitFast || m == InitImage }

// AgentTransport is the channel the guest agent listens on. The VMM driver
// decides it (vmm.Capabilities.AgentTransport); vmlife hands it to both the
// driver's spec and the guest's config disk.
type AgentTransport string

const (
	// TransportVirtioSerial: a virtserialport carrying a yamux stream
	// multiplexer (QEMU; needs no /dev/vhost-vsock on the host).
	TransportVirtioSerial AgentTransport = "virtio-serial"
	// TransportVsock: AF_VSOCK in the guest (Firecracker's hybrid vsock,
	// a host unix socket answered by "CONNECT <port>\n").
	TransportVsock AgentTransport = "vsock"
)

// Valid reports whether t is a known agent transport.
func (t AgentTransport) Valid() bool { return t == TransportVirtioSerial || t == TransportVsock }

// JoinVMMs joins kinds with sep, as strings.Join does strings.
func JoinVMMs(ks []VMMKind, sep string) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return strings.Join(s, sep)
}
