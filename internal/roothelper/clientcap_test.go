package roothelper_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/bangerdev/banger/internal/testutil"
)

// One client (the owner daemon) under load must stay within the helper's
// connection cap and wait for a slot, never be refused by its own helper:
// 100 concurrent API clients made the daemon's tap.create fail with
// "server busy", and the undo's tap.delete with it (the load test found it).
func TestClientWaitsWithinTheConnectionCap(t *testing.T) {
	testutil.RequireRoot(t)
	c, _, logs := startHelper(t, ownerUID)
	const calls = 400
	var wg sync.WaitGroup
	errs := make([]error, calls)
	start := make(chan struct{})
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = c.Identity(context.Background())
		}()
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("%d concurrent calls through one client: %v", calls, err)
	}
	for _, l := range logs.Records(t) {
		if msg, _ := l["msg"].(string); strings.Contains(msg, "refusing connections") {
			t.Fatalf("the helper refused the client's connections: %v", l)
		}
	}
}
