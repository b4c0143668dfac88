package roothelper

import (
	"context"

	"github.com/bangerdev/banger/internal/api"
)

// AdoptVMM has the helper move the VMM (pid, start time) of vm into a
// cgroup of its own, out of the daemon's.
func (c *Client) AdoptVMM(ctx context.Context, vmID string, pid int, startTime uint64) (api.VMCgroupAdopted, error) {
	return invoke(ctx, c, api.MethodHelperVMCgroupAdopt, api.VMCgroupAdopt{VMID: vmID, PID: pid, StartTime: startTime})
}
