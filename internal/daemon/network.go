package daemon

import (
	"context"
	"fmt"
	"strings"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
)

// networkMethods pass the host network's down and state through to the
// root helper; the daemon adds the one check the helper cannot make (are
// VMs still running on it?) and the DNS status it last heard.
func (d *Daemon) networkMethods(m *rpc.Methods) {
	rpc.Register(m, api.MethodNetworkDown, d.networkDown)
	rpc.Register(m, api.MethodNetworkState, d.networkState)
}

func (d *Daemon) networkDown(ctx context.Context, c *rpc.Call, p api.NetworkDown) (api.Empty, error) {
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		return api.Empty{}, err
	}
	var running []string
	for _, vm := range vms {
		if vm.State == model.StateRunning || vm.State == model.StateStarting {
			running = append(running, vm.Name)
		}
	}
	if len(running) > 0 && !p.Force {
		return api.Empty{}, api.Errorf(api.CodeFailedPrecondition,
			"vms are running on the network: %s (stop them first, or --force to cut them off)", strings.Join(running, ", "))
	}
	c.Log.Info("tearing down host network", "force", p.Force, "running_vms", running)
	if err := d.helper.NetworkDown(ctx); err != nil {
		return api.Empty{}, fmt.Errorf("tear down host network: %w", err)
	}
	return api.Empty{}, nil
}

func (d *Daemon) networkState(ctx context.Context, c *rpc.Call, _ api.Empty) (api.NetworkStatus, error) {
	st, err := d.helper.NetworkState(ctx)
	if err != nil {
		return api.NetworkStatus{}, fmt.Errorf("read host network state: %w", err)
	}
	return api.NetworkStatus{Network: st, DNS: d.dns.get()}, nil
}
