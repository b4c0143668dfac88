package e2e

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
)

// logMark is a position in a log file.
type logMark struct {
	path string
	off  int64
}

func markLog(t *testing.T, path string) logMark {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return logMark{path: path, off: st.Size()}
}

// since returns the complete lines written after the mark.
func (m logMark) since(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(m.path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) < m.off {
		t.Fatalf("%s shrank", m.path)
	}
	var out []string
	for _, l := range strings.Split(string(b[m.off:]), "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// bgOpID is what the daemon's own background work (the VM DNS sync) logs
// under: an op_id of its own, never none.
var bgOpID = regexp.MustCompile(`(^| )op_id=bg-[a-z]+-[0-9a-f]{12}( |$)`)

// checkRequestLines: the lines of one request are every line the daemon
// (or the root helper) wrote from just before the request was sent until
// its result arrived. The test is the only client and the VM's own
// watchers log nothing while it runs, so each of those lines must carry
// op_id=opID, except lines of the daemon's own background operations,
// which carry their own bg-… op_id. A line with no op_id fails the test.
func checkRequestLines(t *testing.T, what string, lines []string, opID string, mustHave ...string) {
	t.Helper()
	own := 0
	for _, l := range lines {
		switch {
		case strings.Contains(l, " op_id="+opID+" ") || strings.HasSuffix(l, " op_id="+opID):
			own++
		case bgOpID.MatchString(l):
		default:
			t.Errorf("%s log line written during %s lacks op_id=%s:\n  %s", what, opID, opID, l)
		}
	}
	for _, want := range mustHave {
		found := false
		for _, l := range lines {
			if strings.Contains(l, want) && strings.Contains(l, "op_id="+opID) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s log has no line %q with op_id=%s; lines:\n%s", what, want, opID, strings.Join(lines, "\n"))
		}
	}
	if own == 0 {
		t.Errorf("%s log has no line for %s", what, opID)
	}
	t.Logf("%s log: %d lines during %s, %d of them its own", what, len(lines), opID, own)
}

// Every daemon and root helper log line of a request carries its op_id:
// a vm.create that boots a real VM (create chain, network through the
// helper, boot steps, QEMU, the agent) and the vm.rm that removes it.
func TestOpIDOnEveryLogLineOfARequest(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t, "--debug")

	run := func(opID, method string, call func(context.Context) error, mustDaemon, mustHelper []string) {
		t.Helper()
		dmark, hmark := markLog(t, in.p.DaemonLog()), markLog(t, in.p.HelperLog())
		ctx, cancel := context.WithTimeout(rpc.WithOpID(context.Background(), opID), 4*time.Minute)
		defer cancel()
		if err := call(ctx); err != nil {
			t.Fatalf("%s: %v\ndaemon log:\n%s", method, err, strings.Join(dmark.since(t), "\n"))
		}
		checkRequestLines(t, "daemon", dmark.since(t), opID, mustDaemon...)
		checkRequestLines(t, "root helper", hmark.since(t), opID, mustHelper...)
	}

	var vm model.VM
	run("op-oplog-create", api.MethodVMCreate.Name, func(ctx context.Context) (err error) {
		vm, err = rpc.Invoke(ctx, in.client(), api.MethodVMCreate, api.VMCreate{Name: "oplog", MemoryMiB: 512, Start: true})
		return err
	},
		[]string{"operation started", "call started", "vm boot step done", "vm attached", "vm started", "operation finished"},
		[]string{"tap ready"})
	if vm.State != model.StateRunning {
		t.Fatalf("vm after create: %s", vm.State)
	}
	run("op-oplog-rm", api.MethodVMRemove.Name, func(ctx context.Context) error {
		_, err := rpc.Invoke(ctx, in.client(), api.MethodVMRemove, api.VMRemove{Name: "oplog", Force: true})
		return err
	},
		[]string{"operation started", "vm detached", "operation finished"},
		[]string{"tap deleted"})
}
