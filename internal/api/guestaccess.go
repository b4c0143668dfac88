package api

import "github.com/bangerdev/banger/internal/model"

// Guest access methods of the owner daemon: SSH trust, listening ports,
// port forwarding, copy and recorded sessions.
var (
	MethodVMSSHInfo       = Method[VMRef, SSHInfo]{Name: "vm.ssh_info"} // pins the host key on first use
	MethodVMForgetHostKey = Method[VMRef, Empty]{Name: "vm.forget_host_key", Tracked: true}
	// MethodVMPorts with Watch streams KindPorts frames; its result is then
	// empty.
	MethodVMPorts    = Method[VMPorts, PortList]{Name: "vm.ports"}
	MethodVMForward  = Method[VMForward, Empty]{Name: "vm.forward", Tracked: true} // KindBytes frames both ways
	MethodVMCopy     = Method[VMCopy, Empty]{Name: "vm.cp", Tracked: true}
	MethodVMSessions = Method[VMRef, SessionList]{Name: "vm.sessions"}
)

// Data frame kinds of the guest access methods.
const (
	KindPorts = "ports" // daemon → client: []Port, the full list after a change
	KindBytes = "bytes" // either way: []byte of a forwarded connection
)

// SSHInfo is what the CLI needs to run the system ssh client against a VM
// whose host key the daemon has just checked (or pinned on first use).
type SSHInfo struct {
	Name       string `json:"name"`
	IP         string `json:"ip"`
	User       string `json:"user"`
	HostAlias  string `json:"host_alias"`  // HostKeyAlias the key is filed under (NAME.banger)
	KeyPath    string `json:"key_path"`    // banger's private key
	KnownHosts string `json:"known_hosts"` // banger's pinned known_hosts
	Config     string `json:"config"`      // ssh_config include
	HostKey    string `json:"host_key"`    // the pinned key, authorized_keys form
	Pinned     bool   `json:"pinned_now"`  // this call pinned it (first use)
}

// VMPorts is vm.ports's params.
type VMPorts struct {
	Name  string `json:"name"`
	Watch bool   `json:"watch,omitempty"` // stream KindPorts frames until the client leaves
	All   bool   `json:"all,omitempty"`   // include listeners the VM's policy hides, with the reason
}

// Port is one listening socket in a guest.
type Port struct {
	Proto   string   `json:"proto"` // tcp, tcp6, udp, udp6
	Address string   `json:"address"`
	Port    int      `json:"port"`
	PID     int      `json:"pid,omitempty"`
	Command string   `json:"command,omitempty"`
	Cmdline []string `json:"cmdline,omitempty"`
	// Labels are the policy's notes: "loopback-only" (reachable only
	// through vm forward), "forward-denied" (vm forward refuses it).
	Labels []string `json:"labels,omitempty"`
	// Hidden says why the policy hides this listener (only with All).
	Hidden string `json:"hidden,omitempty"`
}

// PortList is vm.ports's result.
type PortList struct {
	Ports []Port `json:"ports"`
}

// VMForward is vm.forward's params: one TCP connection to Port on the
// guest's loopback (or Host, when set), carried as KindBytes frames. The
// client's eof frame half-closes the guest side; the result comes once the
// guest side has closed.
type VMForward struct {
	Name string `json:"name"`
	Port int    `json:"port"`
	Host string `json:"host,omitempty"` // default 127.0.0.1 in the guest
	// Origin "mcp" puts the forward under [mcp] allow_network.
	Origin string `json:"origin,omitempty"`
}

// Copy directions.
const (
	CopyIn  = "in"  // host → guest
	CopyOut = "out" // guest → host
)

// VMCopy is vm.cp's params. The daemon runs as the same user as the CLI on
// the same machine, so it reads and writes Local itself (an absolute path)
// instead of streaming the archive through the socket. Source is copied
// under its own base name into the destination directory, which is
// created if missing.
type VMCopy struct {
	Name      string `json:"name"`
	Direction string `json:"direction"` // CopyIn or CopyOut
	Local     string `json:"local"`     // in: source path; out: destination directory
	Guest     string `json:"guest"`     // in: destination directory; out: source path
}

// SessionList is vm.sessions's result.
type SessionList struct {
	Sessions []model.GuestSession `json:"sessions"`
	// Detached are the sessions the VM's agent keeps (vm exec --detach),
	// when the VM is running; DetachedError says why they are missing.
	Detached      []DetachedSession `json:"detached"`
	DetachedError string            `json:"detached_error,omitempty"`
}
