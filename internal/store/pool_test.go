package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// storeFDs counts this process's descriptors on the store's files
// (database, WAL, shared memory).
func storeFDs(t *testing.T, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(l, path) {
			n++
		}
	}
	return n
}

// TestConcurrencyLeavesNoDescriptors: a burst of concurrent reads and
// writes must leave the store holding the descriptors it held before it.
// SQLite cannot close a connection's descriptor while another connection
// of the process holds a lock on the file (POSIX locks are per process),
// so a pool that grew with the burst and shrank after it used to leave
// one descriptor per connection the burst opened (the daemon's count grew
// by 9 after 20 API clients, the load test found).
func TestConcurrencyLeavesNoDescriptors(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	mustCreateVM(t, s, testVM("base"))
	before := storeFDs(t, s.Path())
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				var err error
				switch i % 10 {
				case 0:
					_, err = s.CreateVM(ctx, testVM(fmt.Sprintf("vm-%d-%d", g, i)))
				default:
					_, err = s.ListVMs(ctx)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if vms, err := s.ListVMs(ctx); err != nil || len(vms) != 1+64*2 {
		t.Fatalf("ListVMs: %d vms, %v; want %d", len(vms), err, 1+64*2)
	}
	if after := storeFDs(t, s.Path()); after != before {
		t.Fatalf("store descriptors %d before the burst, %d after: the pool's size must not follow the load", before, after)
	}
}
