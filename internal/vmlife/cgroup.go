package vmlife

import (
	"context"

	"github.com/bangerdev/banger/internal/vmm"
)

// adoptCgroup moves a VMM this daemon started (or re-adopted) into its own
// cgroup. A failure is logged, not fatal: the VM runs, but a service
// manager's kill of the daemon's unit could then reach it.
func (m *Manager) adoptCgroup(ctx context.Context, vmID string, inst vmm.Instance) {
	if m.d.Cgroups == nil || inst.PID <= 0 || inst.Agent.JailID != "" {
		return // a jailed Firecracker: the root helper started it in its cgroup
	}
	if err := m.d.Cgroups.AdoptVMM(ctx, vmID, inst.PID, inst.PIDStartTime); err != nil {
		m.d.Log.WarnContext(ctx, "vmm stays in the daemon's cgroup: stopping the daemon's service could kill it", "pid", inst.PID, "err", err)
	}
}
