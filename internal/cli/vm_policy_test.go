package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
)

// TestVMForwardRefusesDeniedPort: the refusal comes before anything
// listens, names the rule and says how to get the port forwarded; nothing
// reaches the daemon's vm.forward.
func TestVMForwardRefusesDeniedPort(t *testing.T) {
	forwards := 0
	env := fakeDaemon(t,
		handle(api.MethodVMGet, func(_ context.Context, c *rpc.Call, _ api.VMRef) (model.VM, error) {
			return model.VM{Name: "dev", State: model.StateRunning, IP: "10.213.77.5", Policy: model.VMPolicy{ForwardDeny: []int{5432}}}, nil
		}),
		handle(api.MethodVMForward, func(_ context.Context, c *rpc.Call, _ api.VMForward) (api.Empty, error) {
			forwards++
			return api.Empty{}, nil
		}),
	)
	out, errOut, code := runBanger(t, env, "vm", "forward", "dev", "5432:0")
	if code != 1 || strings.Contains(out, "forwarding") {
		t.Fatalf("exit %d, stdout %q: want a refusal before listening", code, out)
	}
	for _, want := range []string{"port 5432", "forward-deny", "--forward-deny"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("refusal %q lacks %q", errOut, want)
		}
	}
	if forwards != 0 {
		t.Errorf("vm.forward called %d times for a refused port", forwards)
	}
}

// TestVMPortsShowsPolicy: labels in their own column; --all asks the daemon
// for hidden listeners and shows why they are hidden.
func TestVMPortsShowsPolicy(t *testing.T) {
	var asked []bool
	env := fakeDaemon(t,
		handle(api.MethodVMPorts, func(_ context.Context, c *rpc.Call, p api.VMPorts) (api.PortList, error) {
			asked = append(asked, p.All)
			ports := []api.Port{
				{Proto: "tcp", Address: "127.0.0.1", Port: 5432, PID: 9, Command: "postgres", Labels: []string{"loopback-only", "forward-denied"}},
				{Proto: "tcp", Address: "0.0.0.0", Port: 22, PID: 8, Command: "sshd"},
			}
			if p.All {
				ports = append(ports, api.Port{Proto: "tcp", Address: "0.0.0.0", Port: 7000, PID: 1, Command: "banger-vsock-ag", Hidden: "banger's guest agent"})
			}
			return api.PortList{Ports: ports}, nil
		}),
	)
	out, errOut, code := runBanger(t, env, "vm", "ports", "dev")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "POLICY") ||
		!strings.Contains(lines[1], "22") || !strings.Contains(lines[1], " - ") ||
		!strings.Contains(lines[2], "loopback-only,forward-denied") {
		t.Fatalf("ports table:\n%s", out)
	}
	out, _, code = runBanger(t, env, "vm", "ports", "--all", "dev")
	if code != 0 || !strings.Contains(out, "hidden: banger's guest agent") {
		t.Fatalf("ports --all: exit %d\n%s", code, out)
	}
	if len(asked) != 2 || asked[0] || !asked[1] {
		t.Fatalf("daemon asked with all = %v, want [false true]", asked)
	}
}
