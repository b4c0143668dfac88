// Package vmm is the one door through which the daemon drives virtual
// machines. A driver (qemu, firecracker) is composed of small role
// interfaces; optional extras such as Snapshotter are separate interfaces
// checked at runtime, and Capabilities carries behaviour flags.
//
// Every driver starts its VMM process detached (own session, stdio away from
// the daemon) and describes it in an Instance that the daemon persists, so a
// restarted daemon can re-adopt running VMs with Adopt.
package vmm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/bangerdev/banger/internal/model"
)

// Sentinel errors callers test with errors.Is.
var (
	// ErrNotRunning: the instance's process is gone (or its pid was reused).
	ErrNotRunning = errors.New("vmm process is not running")
	// ErrUnavailable: the driver cannot work on this host (binary missing,
	// unsupported version, KVM unusable).
	ErrUnavailable = errors.New("vmm driver unavailable")
	// ErrInvalidSpec: the Spec fails validation.
	ErrInvalidSpec = errors.New("invalid vm spec")
	// ErrUnsupported: the driver lacks an optional feature.
	ErrUnsupported = errors.New("not supported by this vmm driver")
)

// AgentKind is how the host reaches the guest agent: the driver decides it
// (AgentChannel), and the daemon's agent dialer handles each kind by name.
type AgentKind string

const (
	// AgentVirtioSerialYamux: a unix socket that is one virtio-serial port,
	// multiplexed by yamux (QEMU).
	AgentVirtioSerialYamux AgentKind = "virtio-serial-yamux"
	// AgentHybridVsock: Firecracker's unix socket, then "CONNECT <port>\n".
	AgentHybridVsock AgentKind = "hybrid-vsock"
)

// QEMU's vhost-vsock agent path (AF_VSOCK to a guest CID) was removed: it
// needs /dev/vhost-vsock, which the hosts banger is developed and tested on
// lack, and no caller ever chose it. A stored endpoint of that kind is
// refused by name by the daemon's dialer.

// Spec describes the VM to start.
type Spec struct {
	ID        string // stable id, used for process ids and jail names
	Name      string // for logs
	Dir       string // per-VM directory for sockets and logs; must exist
	Kernel    Kernel
	Initrd    string
	Disks     []Disk // root first, config disk second
	Net       *Net   // nil: no network
	CPUs      int
	MemoryMiB int
	Agent     Agent
	// ConsoleLog is where the serial console goes (default Dir/console.log);
	// ConsoleMaxBytes bounds it through TrimConsole (0: unbounded).
	ConsoleLog      string
	ConsoleMaxBytes int64
	// Shares are host directories shared with the guest (virtio-fs); a
	// driver without Capabilities.SharedDirs refuses a spec that has any.
	Shares []Share
	// Memory, when set, backs guest RAM with a file instead of anonymous
	// memory (drivers with MemorySharer); nil for every ordinary VM.
	Memory *MemoryFile
}

// MemoryFile is guest RAM kept in a file. Shared: the guest writes through
// to it (a snapshot's RAM being made). Not shared: it is mapped
// copy-on-write, so clones of one snapshot share its unmodified pages
// through the page cache and never change the file.
type MemoryFile struct {
	Path   string
	Shared bool
}

// Share is a host directory the guest mounts by Tag.
type Share struct {
	Tag      string
	Source   string // absolute, symlink-free; checked with the owner's rights
	ReadOnly bool
}

// Kernel names the guest kernel in the forms drivers want.
type Kernel struct {
	Path    string // compressed bzImage/vmlinuz (qemu)
	VMLinux string // uncompressed ELF vmlinux (firecracker)
	Cmdline string // extra kernel arguments appended to the driver's base line
}

// Disk is a raw virtio block device.
type Disk struct {
	ID       string
	Path     string
	ReadOnly bool
}

// Net attaches one virtio-net device to a host tap.
type Net struct {
	Tap string
	MAC string
	// File, when set, is the tap already opened (by the root helper: an
	// unprivileged owner may not open /dev/net/tun). A driver with
	// Capabilities.TapFile hands it to the VMM instead of the name; the
	// caller still owns it and closes it once Start returns.
	File *os.File
}

// Agent tells the driver how the guest agent listens.
type Agent struct {
	Transport model.AgentTransport // Capabilities.AgentTransport of the driver
	PortName  string               // virtio-serial port name, e.g. "banger.agent"
	VsockCID  uint32
	VsockPort uint32
}

// AgentEndpoint tells the host how to reach the guest agent.
type AgentEndpoint struct {
	Kind       AgentKind `json:"kind"` // AgentVirtioSerialYamux or AgentHybridVsock
	SocketPath string    `json:"socket_path,omitempty"`
	CID        uint32    `json:"cid,omitempty"`
	Port       uint32    `json:"port,omitempty"`
	// Jailed: the socket is in a jail only the root helper opens
	// (vm.jailer.connect, for the VM JailID).
	JailID string `json:"jail_id,omitempty"`
}

// Instance is a running VMM as the daemon persists it for re-adoption.
type Instance struct {
	Driver        model.VMMKind `json:"driver"`
	ID            string        `json:"id"`
	PID           int           `json:"pid"`
	PIDStartTime  uint64        `json:"pid_start_time"` // /proc/PID/stat field 22: guards against pid reuse
	ControlSocket string        `json:"control_socket"` // QMP or Firecracker API
	Agent         AgentEndpoint `json:"agent"`
	ConsoleLog    string        `json:"console_log"`
	Accel         string        `json:"accel"` // "kvm" or "tcg"
	// Files are sockets and logs the driver made; removed once the VM is gone.
	Files []string `json:"files,omitempty"`
	// Helpers are processes serving the VMM (virtiofsd per share); they
	// end with it.
	Helpers []Helper `json:"helpers,omitempty"`
}

// Helper is a process a VMM depends on, named for logs.
type Helper struct {
	Name         string `json:"name"`
	PID          int    `json:"pid"`
	PIDStartTime uint64 `json:"pid_start_time"`
}

// Capabilities are a driver's behaviour flags.
type Capabilities struct {
	// AgentTransport is the channel the guest agent listens on with this
	// driver: the lifecycle puts it in the spec and the guest's config.
	AgentTransport    model.AgentTransport
	SupportsSnapshots bool // the driver implements Snapshotter
	NeedsVMLinux      bool // Spec.Kernel.VMLinux (ELF) is required
	NeedsKVM          bool // cannot fall back to software emulation
	NeedsRootHelper   bool // launch needs root (jailer)
	TapFile           bool // the VMM takes an open tap (Net.File) instead of opening it by name
	SharedDirs        bool // Spec.Shares work (virtio-fs)
}

// Lifecycle starts, stops and watches VMM processes.
type Lifecycle interface {
	// Start boots spec. ctx bounds start-up only: the VM outlives it.
	Start(ctx context.Context, spec Spec) (Instance, error)
	// Stop ends the VM: graceful asks the guest to power off and waits up to
	// timeout before forcing it. It returns once the process is gone.
	Stop(ctx context.Context, inst Instance, graceful bool, timeout time.Duration) error
	// Kill ends the VM at once (SIGKILL) and waits for the process to go.
	Kill(ctx context.Context, inst Instance) error
	// Alive reports whether inst's process still runs; reason says why not.
	Alive(inst Instance) (bool, string)
	// Adopt verifies a persisted instance: the pid lives with the recorded
	// start time and the control socket answers.
	Adopt(ctx context.Context, inst Instance) error
}

// Console exposes the serial console log.
type Console interface {
	ConsolePath(inst Instance) string
	TailConsole(inst Instance, lines int) (string, error)
}

// AgentChannel says how the host will reach the agent for spec.
type AgentChannel interface {
	AgentEndpoint(spec Spec) (AgentEndpoint, error)
}

// Driver is what the daemon holds per VMM kind.
type Driver interface {
	Name() model.VMMKind
	Capabilities() Capabilities
	// Available reports whether the driver can run here (binary present,
	// supported version); wraps ErrUnavailable.
	Available(ctx context.Context) error
	// Validate checks spec without side effects; wraps ErrInvalidSpec.
	Validate(spec Spec) error
	Lifecycle
	Console
	AgentChannel
}

// Snapshotter is optional: save a running VM's state and restore it.
type Snapshotter interface {
	Save(ctx context.Context, inst Instance, statePath string) error
	Restore(ctx context.Context, spec Spec, statePath string) (Instance, error)
}

// RegularFile checks that a path a driver hands to its VMM (kernel, initrd,
// disk) names an existing regular file.
func RegularFile(p string) error {
	if p == "" {
		return errors.New("no path given")
	}
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	return nil
}
