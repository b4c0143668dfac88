package daemon

import (
	"context"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/roothelper"
	"github.com/bangerdev/banger/internal/rpc"
)

// A helper slowed by a daemon under load is busy, not unreachable: status
// must wait for its answer as long as the helper's own request deadline
// (100 API clients made status report "unreachable" after 2 s).
func TestHelperStatusWaitsForABusyHelper(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "helper.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	m := rpc.NewMethods()
	rpc.Register(m, api.MethodHelperIdentity, func(ctx context.Context, c *rpc.Call, _ api.Empty) (api.HelperIdentity, error) {
		calls.Add(1)
		time.Sleep(3 * time.Second)
		return api.HelperIdentity{PID: 4242}, nil
	})
	srv := rpc.NewServer(m, rpc.ServerOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()

	d := &Daemon{helper: roothelper.NewClient(sock)}
	hs := d.helperStatus(context.Background())
	if !hs.Reachable || hs.PID != 4242 || hs.Error != "" {
		t.Fatalf("helper status of a helper answering in 3 s: %+v, want reachable, pid 4242", hs)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("status called the helper %d times, want once", n)
	}
}
