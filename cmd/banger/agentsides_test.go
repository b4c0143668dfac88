package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestAgentSidesStayApart keeps the guest agent's split true: the guest
// binary links the protocol and the server, never the host's client and
// dialers; the daemon links the protocol and the client, and no host binary the
// server that runs as root in the guest.
func TestAgentSidesStayApart(t *testing.T) {
	const base = "github.com/bangerdev/banger/internal/guest/guestagent/"
	for _, c := range []struct {
		pkg        string
		want, deny []string
	}{
		{"../banger-vsock-agent", []string{"agentproto", "agentserver"}, []string{"agentclient", "agenttest"}},
		{".", nil, []string{"agentserver", "agenttest"}},
		{"../bangerd", []string{"agentproto", "agentclient"}, []string{"agentserver", "agenttest"}},
		{"../banger-helper", nil, []string{"agentserver", "agentclient", "agenttest"}},
	} {
		out, err := exec.Command("go", "list", "-deps", c.pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", c.pkg, err)
		}
		deps := map[string]bool{}
		for _, l := range strings.Fields(string(out)) {
			deps[l] = true
		}
		for _, w := range c.want {
			if !deps[base+w] {
				t.Errorf("%s does not link %s: the walk is wrong or the split moved", c.pkg, w)
			}
		}
		for _, d := range c.deny {
			if deps[base+d] {
				t.Errorf("%s links %s", c.pkg, d)
			}
		}
	}
}
