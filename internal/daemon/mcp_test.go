package daemon

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/model"
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
