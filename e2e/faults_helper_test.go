package e2e

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
)

// TestFaultHelperKilled: a root helper the daemon spawned and that dies
// (SIGKILL) is started again by the daemon within seconds, answers, and
// is stopped with the daemon (no restart then).
func TestFaultHelperKilled(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	testutil.RequireRoot(t)
	in := newInstance(t)
	in.ok("banger", "daemon", "start")
	helper := func() api.HelperStatus {
		st, err := rpc.Invoke(context.Background(), in.client(), api.MethodDaemonStatus, api.Empty{})
		if err != nil {
			t.Fatal(err)
		}
		return st.Helper
	}
	first := helper()
	if !first.Reachable || first.PID == 0 {
		t.Fatalf("no helper to kill: %+v", first)
	}
	for i := 0; i < 2; i++ { // twice: the restarted one is supervised too
		old := helper().PID
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		waitFor(t, 15*time.Second, "the daemon restarted its root helper", func() (bool, string) {
			h := helper()
			return h.Reachable && h.PID != 0 && h.PID != old, fmt.Sprintf("%+v", h)
		})
		t.Logf("helper %d killed; %d answered after %s", old, helper().PID, time.Since(start).Round(time.Millisecond))
	}
	last := helper().PID
	in.ok("banger", "daemon", "stop")
	waitGone(t, last)
	time.Sleep(time.Second)
	if c, err := net.Dial("unix", in.p.HelperSocket()); err == nil {
		c.Close()
		t.Fatal("a helper answers after the daemon stopped it")
	}
}
