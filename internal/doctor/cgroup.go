package doctor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
)

// checkVMMCgroups checks that every running VM's VMM sits in a cgroup of
// its own (banger/vm-<id>, or a banger-vm-<id>.scope under systemd), where
// stopping or killing the daemon's service cannot reach it.
func (r *runner) checkVMMCgroups(ctx context.Context) Check {
	c := Check{Name: CheckVMMCgroups}
	if r.daemon == nil {
		c.Status, c.Detail = Warn, "the daemon is not answering: no VM to check"
		return c
	}
	res, err := query(ctx, r, r.cfg.Paths.Socket(), api.MethodVMList)
	if err != nil {
		c.Status, c.Detail = Warn, fmt.Sprintf("the daemon did not list vms: %v", err)
		return c
	}
	var own, shared []string
	for _, vm := range res.VMs {
		if vm.State != model.StateRunning || vm.PID <= 0 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(r.cfg.Proc, strconv.Itoa(vm.PID), "cgroup"))
		if err != nil {
			continue // it ended meanwhile
		}
		if vmmCgroupOwn(string(b), vm.ID) {
			own = append(own, vm.Name)
		} else {
			shared = append(shared, fmt.Sprintf("%s (pid %d)", vm.Name, vm.PID))
		}
	}
	switch {
	case len(shared) > 0:
		c.Status = Warn
		c.Detail = "vmm not in a cgroup of its own, so stopping the daemon's service could kill it: " + strings.Join(shared, ", ")
		c.Fix = "the root helper moves a VMM when the daemon starts it: make sure this release's helper runs (sudo banger system install), then restart those VMs (banger vm stop NAME; banger vm start NAME)"
	case len(own) == 0:
		c.Status, c.Detail = OK, "no running vm"
	default:
		c.Status, c.Detail = OK, fmt.Sprintf("%d running vm(s), each vmm in its own cgroup", len(own))
	}
	return c
}

// vmmCgroupOwn reads /proc/PID/cgroup: the process-tracking hierarchy
// (cgroup2 "0::", else name=systemd) must hold the VM's own cgroup.
func vmmCgroupOwn(procCgroup, vmID string) bool {
	var path string
	for _, line := range strings.Split(procCgroup, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			path = parts[2]
			break
		}
		if parts[1] == "name=systemd" {
			path = parts[2]
		}
	}
	return path == "/banger/vm-"+vmID || filepath.Base(path) == "banger-vm-"+vmID+".scope"
}
