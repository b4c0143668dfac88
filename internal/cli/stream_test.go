package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
)

// TestWatchStreams: vm ports -w and events read their streams through one
// loop: data frames of their kind are printed in order, other kinds are
// skipped, the call's result ends the command, and a failure the daemon
// returns mid-stream is the command's error.
func TestWatchStreams(t *testing.T) {
	env := fakeDaemon(t, func(ms *rpc.Methods) {
		rpc.Register(ms, api.MethodVMPorts, func(_ context.Context, c *rpc.Call, _ api.VMPorts) (api.PortList, error) {
			for _, p := range []int{22, 8080} {
				if err := c.Send(api.KindPorts, []api.Port{{Proto: "tcp", Address: "0.0.0.0", Port: p}}); err != nil {
					return api.PortList{}, err
				}
				if err := c.Send(api.KindLog, "not a ports frame"); err != nil {
					return api.PortList{}, err
				}
			}
			return api.PortList{}, nil
		})
		rpc.Register(ms, api.MethodEventsWatch, func(_ context.Context, c *rpc.Call, _ api.EventsWatch) (api.Empty, error) {
			if err := c.Send(api.KindSubscribed, struct{}{}); err != nil {
				return api.Empty{}, err
			}
			for _, k := range []string{"started", "ready"} {
				if err := c.Send(api.KindEvent, api.Event{Kind: k, VM: "dev", Time: time.Unix(0, 0)}); err != nil {
					return api.Empty{}, err
				}
			}
			return api.Empty{}, api.Errorf(api.CodeUnavailable, "watcher fell behind: run banger events again")
		})
	})
	out, errOut, code := runBanger(t, env, "vm", "ports", "-w", "--json", "dev")
	if code != 0 {
		t.Fatalf("ports -w: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"port":22`) || !strings.Contains(lines[1], `"port":8080`) {
		t.Fatalf("ports -w printed %q; want the two port lists in order, nothing else", out)
	}
	out, errOut, code = runBanger(t, env, "events", "--json")
	if code == 0 || !strings.Contains(errOut, "watcher fell behind") {
		t.Fatalf("events: exit %d, stderr %q; want the daemon's error", code, errOut)
	}
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"started"`) || !strings.Contains(lines[1], `"ready"`) {
		t.Fatalf("events printed %q; want the two events in order", out)
	}
}
