package daemon

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/store"
)

// A VM being removed still has its record (and IP field) after its lease
// went back to the pool; a VM created meanwhile may take that address. The
// name table must publish the address for the lease's holder only: two
// records with one address make the helper refuse the whole table, and
// every VM's name went stale for as long as creates and removes overlapped
// (the API load test found it).
func TestDNSRecordsFollowLeases(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "banger.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pool := netip.MustParsePrefix("10.213.77.0/24")
	mk := func(name, mac string) model.VM {
		vm, err := st.CreateVM(ctx, model.VM{Name: name, Image: "img", Kernel: "k", VMM: model.VMMQEMU, InitMode: model.InitFast,
			CPUs: 1, MemoryMiB: 256, DiskBytes: 1 << 30, Dir: "/state/vms/" + name, MAC: mac})
		if err != nil {
			t.Fatal(err)
		}
		l, err := st.AllocateLease(ctx, vm.ID, pool, nil)
		if err != nil {
			t.Fatal(err)
		}
		vm.IP = l.IP
		if vm, err = st.UpdateVM(ctx, vm); err != nil {
			t.Fatal(err)
		}
		return vm
	}
	keep := mk("keep", "02:00:00:00:00:01")
	going := mk("going", "02:00:00:00:00:02")
	// going is half-removed: its lease is back in the pool, its record not
	// yet deleted; new takes the freed address.
	if err := st.ReleaseLease(ctx, going.ID); err != nil {
		t.Fatal(err)
	}
	fresh := mk("new", "02:00:00:00:00:03")
	if fresh.IP != going.IP {
		t.Fatalf("the pool gave %s, not the freed %s: the test does not reach the race", fresh.IP, going.IP)
	}
	d := &Daemon{store: st}
	recs, err := d.dnsRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []api.DNSRecord{{Name: "keep", IP: keep.IP}, {Name: "new", IP: fresh.IP}}
	if len(recs) != len(want) || recs[0] != want[0] || recs[1] != want[1] {
		t.Fatalf("dns records %v, want %v (the half-removed vm's stale address left out)", recs, want)
	}
}
