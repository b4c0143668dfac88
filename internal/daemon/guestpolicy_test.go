package daemon

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/policy"
)

// TestPortsFromAppliesPolicy feeds vm.ports a hostile agent reply and
// checks what reaches the client: the agent's own socket hidden (shown with
// its reason under --all), loopback binds and forward-denied ports labelled,
// guest strings passed through untouched (the CLI escapes them).
func TestPortsFromAppliesPolicy(t *testing.T) {
	reply := []agentproto.Port{
		{Proto: "tcp", Address: "0.0.0.0", Port: 22, PID: 310, Command: "sshd"},
		{Proto: "tcp", Address: "127.0.0.1", Port: 8080, PID: 400, Command: "python3"},
		{Proto: "tcp6", Address: "::1", Port: 5432, PID: 401, Command: "postgres"},
		{Proto: "tcp", Address: "0.0.0.0", Port: 7000, PID: 1, Command: "exe", Cmdline: []string{policy.AgentProgram, "serve"}},
		{Proto: "udp", Address: "\x1b]0;pwned\x07", Port: 53, PID: 402, Command: "evil\x1b[2J"},
	}
	pol, err := policy.FromModel(model.VM{Name: "dev", Policy: model.VMPolicy{ForwardDeny: []int{5432}}})
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		port   int
		labels string
		hidden string
	}
	summarise := func(ps []api.Port) []row {
		var out []row
		for _, p := range ps {
			out = append(out, row{p.Port, strings.Join(p.Labels, ","), p.Hidden})
		}
		return out
	}
	visible := []row{{22, "", ""}, {8080, "loopback-only", ""}, {5432, "loopback-only,forward-denied", ""}, {53, "", ""}}
	if got := summarise(portsFrom(reply, pol, false)); !slices.Equal(got, visible) {
		t.Errorf("ports = %+v, want %+v", got, visible)
	}
	all := []row{{22, "", ""}, {8080, "loopback-only", ""}, {5432, "loopback-only,forward-denied", ""}, {7000, "", "banger's guest agent"}, {53, "", ""}}
	if got := summarise(portsFrom(reply, pol, true)); !slices.Equal(got, all) {
		t.Errorf("ports --all = %+v, want %+v", got, all)
	}
	if got := portsFrom(reply, pol, false)[3]; got.Command != "evil\x1b[2J" || got.Address != "\x1b]0;pwned\x07" {
		t.Errorf("guest strings changed on the way: %+v", got)
	}
	if got := portsFrom(nil, pol, false); got == nil || len(got) != 0 {
		t.Errorf("no listeners = %#v, want an empty list (JSON [])", got)
	}
}

// TestForwardTargetRefusals: vm.forward refuses what the VM's policy
// denies, with a code and a message naming the rule and the way out.
func TestForwardTargetRefusals(t *testing.T) {
	vm := model.VM{Name: "dev", IP: "10.213.77.5", Policy: model.VMPolicy{ForwardDeny: []int{5432}}}
	for name, tc := range map[string]struct {
		p        api.VMForward
		want     string
		code     string
		contains string
	}{
		"default loopback": {p: api.VMForward{Name: "dev", Port: 8080}, want: "127.0.0.1:8080"},
		"own address":      {p: api.VMForward{Name: "dev", Port: 80, Host: "10.213.77.5"}, want: "10.213.77.5:80"},
		"mapped loopback":  {p: api.VMForward{Name: "dev", Port: 80, Host: "::ffff:127.0.0.1"}, want: "127.0.0.1:80"},
		"denied port":      {p: api.VMForward{Name: "dev", Port: 5432}, code: api.CodePermissionDenied, contains: "forward-deny"},
		"metadata":         {p: api.VMForward{Name: "dev", Port: 80, Host: "169.254.169.254"}, code: api.CodePermissionDenied, contains: "guest-only"},
		"another guest":    {p: api.VMForward{Name: "dev", Port: 22, Host: "10.213.77.6"}, code: api.CodePermissionDenied, contains: "guest-only"},
		"hostname":         {p: api.VMForward{Name: "dev", Port: 22, Host: "metadata.google.internal"}, code: api.CodeInvalidArgument, contains: "not an IP address"},
		"port 0":           {p: api.VMForward{Name: "dev", Port: 0}, code: api.CodeInvalidArgument, contains: "1..65535"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := forwardTarget(vm, tc.p)
			if tc.code == "" {
				if err != nil || got != tc.want {
					t.Fatalf("forwardTarget = %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Code != tc.code || !strings.Contains(ae.Message, tc.contains) || got != "" {
				t.Fatalf("forwardTarget = %q, %v; want %s containing %q", got, err, tc.code, tc.contains)
			}
		})
	}
}
