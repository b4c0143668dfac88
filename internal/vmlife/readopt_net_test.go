package vmlife

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/vmmtest"
)

// readoptNet records which VMs Attach was asked for and fails when told.
type readoptNet struct {
	mu       sync.Mutex
	attached []string
	err      error
}

func (n *readoptNet) Attach(_ context.Context, vm model.VM) (Attachment, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.attached = append(n.attached, vm.ID+" "+vm.Tap)
	return Attachment{Tap: vm.Tap}, n.err
}
func (n *readoptNet) Detach(context.Context, model.VM) error { return nil }
func (n *readoptNet) OpenTap(context.Context, model.VM) (*os.File, error) {
	return nil, api.Errorf(api.CodeUnimplemented, "no tap.open")
}

// A re-adopted running VM with a tap has its network filter re-applied
// (Attach for that VM and tap); a failure leaves the VM adopted and
// running and is an error line naming the tap, the cause and the remedy.
func TestAdoptReappliesNetworkFilter(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, fail := range []bool{false, true} {
		m, st := suspendTestManager(t)
		var logs bytes.Buffer
		m.d.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		net := &readoptNet{}
		if fail {
			net.err = errors.New(`create tap "bt-x": interface exists but was not made by banger`)
		}
		m.d.Network = net
		drv := vmmtest.New(t, model.VMMQEMU, nil)
		m.d.Drivers = map[model.VMMKind]vmm.Driver{model.VMMQEMU: drv}
		m.d.DialAgent = func(vmm.AgentEndpoint) (Agent, error) { return nopAgent{}, nil }
		m.life = ctx
		vm := suspendTestVM(t, st, "jailed", model.VMMQEMU, model.StateStarting, model.StateRunning)
		inst, err := drv.Start(ctx, vmm.Spec{ID: vm.ID, Dir: vm.Dir})
		if err != nil {
			t.Fatal(err)
		}
		if err := writeInstance(vm, inst); err != nil {
			t.Fatal(err)
		}
		vm.PID, vm.PIDStartTime, vm.Tap = inst.PID, inst.PIDStartTime, "bt-x"
		if err := m.save(ctx, &vm); err != nil {
			t.Fatal(err)
		}
		if err := m.Adopt(ctx); err != nil {
			t.Fatal(err)
		}
		if want := []string{vm.ID + " bt-x"}; len(net.attached) != 1 || net.attached[0] != want[0] {
			t.Errorf("fail=%v: attach calls %v, want %v", fail, net.attached, want)
		}
		cur, err := st.GetVM(ctx, vm.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cur.State != model.StateRunning || m.running[vm.ID] == nil {
			t.Errorf("fail=%v: vm %s, tracked %v; want it adopted running", fail, cur.State, m.running[vm.ID] != nil)
		}
		out := logs.String()
		if fail {
			if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "could not re-apply") || !strings.Contains(out, "bt-x") ||
				!strings.Contains(out, "not made by banger") || !strings.Contains(out, "restart the vm") {
				t.Errorf("failed re-apply logged as:\n%s\nwant an error line with the tap, the cause and the remedy", out)
			}
		} else if !strings.Contains(out, "re-applied the re-adopted vm's network filter") || strings.Contains(out, "level=ERROR") {
			t.Errorf("re-apply logged as:\n%s\nwant one info line and no error", out)
		}
		m.Close()
	}
}
