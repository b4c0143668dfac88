package daemon

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/policy"
	"github.com/bangerdev/banger/internal/vmlife"
)

func TestMCPCheckCreate(t *testing.T) {
	lim := config.MCP{MaxVMs: 2, MaxMemory: 512, AllowNetwork: false, DefaultTimeout: "1m"}
	one := []model.VM{{Name: "a", Origin: model.OriginMCP}, {Name: "cli", Origin: ""}, {Name: "cli2"}}
	two := append(one, model.VM{Name: "b", Origin: model.OriginMCP})

	p := api.VMCreate{}
	if err := mcpCheckCreate(lim, one, &p); err != nil {
		t.Fatalf("a second MCP VM (CLI VMs not counted): %v", err)
	}
	if p.MemoryMiB != 512 {
		t.Fatalf("defaulted memory = %d, want lowered to max_memory 512", p.MemoryMiB)
	}
	cases := []struct {
		name     string
		existing []model.VM
		p        api.VMCreate
		code     string
		want     string
	}{
		{"count", two, api.VMCreate{}, api.CodeFailedPrecondition, "mcp.max_vms reached: 2 VMs created through MCP exist (a, b)"},
		{"memory", one, api.VMCreate{MemoryMiB: 513}, api.CodePermissionDenied, "above mcp.max_memory (512 MiB)"},
		{"negative", one, api.VMCreate{MemoryMiB: -1}, api.CodeInvalidArgument, "negative"},
		{"network", one, api.VMCreate{Network: model.NetworkShared}, api.CodePermissionDenied, "allow_network is false"},
	}
	for _, c := range cases {
		err := mcpCheckCreate(lim, c.existing, &c.p)
		if !errors.Is(err, &api.Error{Code: c.code}) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %s containing %q", c.name, err, c.code, c.want)
		}
	}
	lim.AllowNetwork = true
	p = api.VMCreate{Network: model.NetworkShared, MemoryMiB: 256}
	if err := mcpCheckCreate(lim, one, &p); err != nil || p.MemoryMiB != 256 {
		t.Fatalf("allowed shared VM: %v (memory %d)", err, p.MemoryMiB)
	}
}

func TestExecTimeout(t *testing.T) {
	lim := config.MCP{DefaultTimeout: "1m"}
	for _, c := range []struct {
		origin string
		asked  int
		want   time.Duration
	}{
		{"", 0, 0},
		{"", 7200, 2 * time.Hour},
		{model.OriginMCP, 0, time.Minute},
		{model.OriginMCP, 5, 5 * time.Second},
		{model.OriginMCP, 3600, time.Minute}, // capped: a client cannot lift it
	} {
		got, err := execTimeout(lim, c.origin, c.asked)
		if err != nil || got != c.want {
			t.Errorf("execTimeout(%q, %d) = %v, %v; want %v", c.origin, c.asked, got, err, c.want)
		}
	}
	if _, err := execTimeout(lim, model.OriginMCP, -1); !errors.Is(err, &api.Error{Code: api.CodeInvalidArgument}) {
		t.Errorf("negative timeout: %v", err)
	}
	if err := mcpCheckForward(config.MCP{AllowNetwork: false}, model.OriginMCP); !errors.Is(err, &api.Error{Code: api.CodePermissionDenied}) {
		t.Errorf("forward with allow_network=false: %v", err)
	}
	if err := mcpCheckForward(config.MCP{AllowNetwork: false}, ""); err != nil {
		t.Errorf("a CLI forward is not under [mcp]: %v", err)
	}
	if err := checkOrigin("root"); !errors.Is(err, &api.Error{Code: api.CodeInvalidArgument}) {
		t.Errorf("unknown origin: %v", err)
	}
}

func TestMCPCheckCreateDeniesEgress(t *testing.T) {
	lim := config.MCP{MaxVMs: 2, MaxMemory: 512, AllowNetwork: false, DefaultTimeout: "1m"}
	p := api.VMCreate{Policy: model.VMPolicy{DenyEgress: []string{"10.9.0.0/16"}}}
	if err := mcpCheckCreate(lim, nil, &p); err != nil {
		t.Fatal(err)
	}
	if p.Network != model.NetworkIsolated || !slices.Contains(p.Policy.DenyEgress, "0.0.0.0/0") || !slices.Contains(p.Policy.DenyEgress, "10.9.0.0/16") {
		t.Fatalf("allow_network=false create: network %q, policy %+v; want isolated, 0.0.0.0/0 added to the own denies", p.Network, p.Policy)
	}
	// What the host is told to drop for such a VM covers every address.
	pol, err := policy.FromModel(model.VM{Name: "m", Policy: p.Policy})
	if err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{"1.1.1.1", "10.0.0.1", "192.168.1.1", "169.254.169.254"} {
		a := netip.MustParseAddr(dst)
		if !slices.ContainsFunc(pol.Egress(), func(q netip.Prefix) bool { return q.Contains(a) }) {
			t.Errorf("egress to %s is not dropped: %v", dst, pol.Egress())
		}
	}
	lim.AllowNetwork = true
	p = api.VMCreate{}
	if err := mcpCheckCreate(lim, nil, &p); err != nil || len(p.Policy.DenyEgress) != 0 {
		t.Fatalf("allow_network=true: %v, policy %+v (want nothing added)", err, p.Policy)
	}
}

func TestMCPCheckFork(t *testing.T) {
	lim := config.MCP{MaxVMs: 3, MaxMemory: 512, AllowNetwork: false, DefaultTimeout: "1m"}
	one := []model.VM{{Name: "a", Origin: model.OriginMCP}, {Name: "cli"}}
	cases := []struct {
		name   string
		memory int
		p      vmlife.ForkRequest
		code   string
		want   string
	}{
		{"count", 512, vmlife.ForkRequest{From: "base", Count: 3}, api.CodeFailedPrecondition, "1 VMs created through MCP exist (a) and 3 more were asked for, at most 3"},
		{"memory", 1024, vmlife.ForkRequest{From: "base"}, api.CodePermissionDenied, `"base" has 1024 MiB of memory, above mcp.max_memory (512 MiB)`},
		{"negative", 256, vmlife.ForkRequest{From: "base", Count: -1}, api.CodeInvalidArgument, "negative"},
	}
	for _, c := range cases {
		err := mcpCheckFork(lim, one, c.memory, &c.p)
		if !errors.Is(err, &api.Error{Code: c.code}) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %s containing %q", c.name, err, c.code, c.want)
		}
		if c.p.Isolated || len(c.p.Policy.DenyEgress) != 0 {
			t.Errorf("%s: a refused fork was changed: %+v", c.name, c.p)
		}
	}
	p := vmlife.ForkRequest{From: "base", Count: 2}
	if err := mcpCheckFork(lim, one, 512, &p); err != nil {
		t.Fatalf("two clones up to max_vms, at max_memory: %v", err)
	}
	if !p.Isolated || !slices.Equal(p.Policy.DenyEgress, []string{"0.0.0.0/0"}) {
		t.Fatalf("allow_network=false fork: %+v, want isolated and 0.0.0.0/0 denied", p)
	}
	lim.AllowNetwork = true
	p = vmlife.ForkRequest{From: "base"}
	if err := mcpCheckFork(lim, one, 256, &p); err != nil || p.Isolated || len(p.Policy.DenyEgress) != 0 {
		t.Fatalf("allow_network=true fork: %v %+v (want unchanged)", err, p)
	}
}
