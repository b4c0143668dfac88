package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
)

// vm exec --detach goes through vm.exec's one typed result: the daemon's
// session form reaches the CLI, which prints the session id; a daemon
// that answers without one gets a clear error, not an empty line.
func TestExecDetachPrintsSession(t *testing.T) {
	var got api.VMExec
	env := fakeDaemon(t, handle(api.MethodVMExec, func(_ context.Context, c *rpc.Call, p api.VMExec) (api.VMExecResult, error) {
		got = p
		if p.Name == "old" {
			return api.VMExecResult{ExitCode: 0}, nil // what a daemon that ran it in the foreground answers
		}
		return api.VMExecResult{Session: &api.SessionStarted{ID: "00112233aabbccdd", PID: 77}}, nil
	}))
	out, errOut, code := runBanger(t, env, "vm", "exec", "--detach", "dev", "--", "sleep", "100")
	if code != 0 || strings.TrimSpace(out) != "00112233aabbccdd" {
		t.Fatalf("exit %d, stdout %q, stderr %q: want the session id", code, out, errOut)
	}
	if !got.Detach || got.Name != "dev" || strings.Join(got.Argv, " ") != "sleep 100" {
		t.Errorf("daemon got %+v", got)
	}
	out, errOut, code = runBanger(t, env, "vm", "exec", "--detach", "old", "--", "true")
	if code != 1 || out != "" || !strings.Contains(errOut, "without a session id") {
		t.Errorf("no session in the answer: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
