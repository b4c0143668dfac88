package api

// Firecracker under the jailer needs root (chroot, device nodes, cgroups,
// the uid switch), so the root helper launches it. The owner daemon names
// only the VM; the helper computes every path and the jail's uid/gid from
// its own (root-owned) settings, and hands back the API socket as a
// connected descriptor, so the owner never needs access to the chroot.
var (
	// MethodHelperVMJailerStart builds the VM's jail from the files of its VM dir
	// (opened as the owner), starts the jailer and, once Firecracker's API
	// socket answers, passes a connection to it (SCM_RIGHTS).
	MethodHelperVMJailerStart = Method[VMJailerRef, VMJailerStarted]{Name: "vm.jailer.start"}
	// MethodHelperVMJailerConnect passes a fresh connection to a socket of a
	// running jail ("api" or "vsock"), after checking that the process is
	// the one the helper started (re-adoption after a restart).
	MethodHelperVMJailerConnect = Method[VMJailerConnect, VMJailerStarted]{Name: "vm.jailer.connect"}
	// MethodHelperVMJailerStop kills the VM's jailed Firecracker, gives the root
	// disk back its group and mode, and removes the jail. Idempotent.
	MethodHelperVMJailerStop = Method[VMJailerRef, Empty]{Name: "vm.jailer.stop"}
)

// Sockets of a jail that vm.jailer.connect reaches.
const (
	JailerSocketAPI   = "api"
	JailerSocketVsock = "vsock"
)

// VMJailerRef names a VM by id; nothing else is accepted.
type VMJailerRef struct {
	VMID string `json:"vm_id"`
}

// VMJailerConnect names a VM and one of its jail's sockets.
type VMJailerConnect struct {
	VMID   string `json:"vm_id"`
	Socket string `json:"socket"`
}

// VMJailerStarted describes a running jail.
type VMJailerStarted struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"` // /proc/PID/stat field 22
	UID       int    `json:"uid"`        // the jail's uid (from the helper's reserved range)
	GID       int    `json:"gid"`
	JailRoot  string `json:"jail_root"` // the chroot (root-owned parents; not for the owner to open)
}
