package api

// MethodHelperVMCgroupAdopt (root helper) moves a VMM the owner daemon just
// started into a cgroup of its own, so no service's stop, restart or final
// kill reaches it. Params: VMCgroupAdopt; result: VMCgroupAdopted. The
// helper checks that the process is the caller's child (or already in its
// VM's cgroup), a VMM binary, and runs entirely as the owner uid.
var MethodHelperVMCgroupAdopt = Method[VMCgroupAdopt, VMCgroupAdopted]{Name: "vm.cgroup.adopt"}

// VMCgroupAdopt names one VMM process: its VM's id, pid and start time
// (/proc/PID/stat field 22), which together name one process for good.
type VMCgroupAdopt struct {
	VMID      string `json:"vm_id"`
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
}

// VMCgroupAdopted says where the VMM now lives.
type VMCgroupAdopted struct {
	// Manager is "systemd" (a transient scope) or "cgroupfs" (a
	// directory under each process-tracking hierarchy).
	Manager string `json:"manager"`
	// Cgroups are the cgroup paths the process is in, per hierarchy.
	Cgroups []string `json:"cgroups"`
	// Already is true when the process was there before this call.
	Already bool `json:"already,omitempty"`
}
