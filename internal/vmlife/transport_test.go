package vmlife

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/guest/guestconfig"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/vmm"
)

// transportDriver is named qemu (whose name once meant virtio-serial to the
// lifecycle) but offers whatever transport the test gives it.
type transportDriver struct {
	vmm.Driver // unused methods panic
	transport  model.AgentTransport
	validated  []vmm.Spec
}

func (d *transportDriver) Name() model.VMMKind { return model.VMMQEMU }
func (d *transportDriver) Capabilities() vmm.Capabilities {
	return vmm.Capabilities{AgentTransport: d.transport}
}
func (d *transportDriver) Validate(spec vmm.Spec) error {
	d.validated = append(d.validated, spec)
	return nil
}

// The lifecycle takes the agent transport from the driver, never from the
// VM's VMM name: the spec the driver gets and the guest's config disk both
// carry the driver's choice.
func TestBootTakesAgentTransportFromDriver(t *testing.T) {
	ctx := context.Background()
	for _, tr := range []model.AgentTransport{model.TransportVsock, model.TransportVirtioSerial} {
		t.Run(string(tr), func(t *testing.T) {
			m, st := suspendTestManager(t)
			m.d.Initramfs = func(context.Context, model.Kernel) (string, error) { return "/initrd.img", nil }
			drv := &transportDriver{transport: tr}
			vm := suspendTestVM(t, st, "tr", model.VMMQEMU)
			s := &bootState{vm: vm, driver: drv, kernel: model.Kernel{Name: "k", Path: "/vmlinuz"}}
			if err := m.stepConfig(ctx, s, nil); err != nil {
				t.Fatalf("config step: %v", err)
			}
			if err := m.stepInitramfs(ctx, s, nil); err != nil {
				t.Fatalf("initramfs step: %v", err)
			}
			if len(drv.validated) != 1 {
				t.Fatalf("driver validated %d specs, want 1", len(drv.validated))
			}
			got := drv.validated[0].Agent
			cfg, err := guestconfig.ReadFile(configDisk(s.vm))
			if err != nil {
				t.Fatalf("read the guest config disk: %v", err)
			}
			if got.Transport != tr || cfg.Agent.Transport != tr {
				t.Fatalf("spec transport %q, guest config transport %q; the driver offers %q", got.Transport, cfg.Agent.Transport, tr)
			}
			switch tr {
			case model.TransportVsock:
				if got.VsockCID != AgentVsockCID || got.VsockPort != AgentVsockPort || cfg.Agent.VsockPort != AgentVsockPort || got.PortName != "" {
					t.Errorf("vsock agent: spec %+v, guest %+v", got, cfg.Agent)
				}
			case model.TransportVirtioSerial:
				if got.PortName != AgentPortName || cfg.Agent.PortName != AgentPortName || got.VsockPort != 0 || cfg.Agent.VsockPort != 0 {
					t.Errorf("virtio-serial agent: spec %+v, guest %+v", got, cfg.Agent)
				}
			}
		})
	}
}

// A driver offering a transport the guest agent does not speak fails the
// config step with the transport's name, before any config disk is written.
func TestBootRefusesUnknownAgentTransport(t *testing.T) {
	m, st := suspendTestManager(t)
	vm := suspendTestVM(t, st, "tr", model.VMMQEMU)
	s := &bootState{vm: vm, driver: &transportDriver{transport: "vhost-vsock"}}
	err := m.stepConfig(context.Background(), s, nil)
	if err == nil || !strings.Contains(err.Error(), `agent transport "vhost-vsock"`) || !strings.Contains(err.Error(), "vmm qemu") {
		t.Fatalf("config step with an unknown transport: %v; want an error naming the transport and the vmm", err)
	}
	if _, err := os.Stat(configDisk(vm)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("config disk after a refused transport: %v; want none written", err)
	}
}

// A re-adopted VM whose agent endpoint cannot be dialled stays tracked with
// an agent that says why on every call.
func TestAdoptedAgentDialError(t *testing.T) {
	m, _ := suspendTestManager(t)
	m.d.DialAgent = func(ep vmm.AgentEndpoint) (Agent, error) {
		return nil, errors.New(`unknown agent transport "` + string(ep.Kind) + `"`)
	}
	a := m.dialAdopted(context.Background(), vmm.Instance{Agent: vmm.AgentEndpoint{Kind: "vhost-vsock"}})
	if _, err := a.Health(context.Background()); err == nil || !strings.Contains(err.Error(), "vhost-vsock") {
		t.Errorf("health of an undialable agent: %v", err)
	}
	if err := a.Poweroff(context.Background()); err == nil {
		t.Error("poweroff of an undialable agent succeeded")
	}
	if err := a.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}
