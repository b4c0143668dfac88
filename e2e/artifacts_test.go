package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/testutil"
)

// An image a VM uses is not removed without --force; the VM keeps working
// from its own disk copy afterwards.
func TestImageInUseNeedsForce(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	in.ok("banger", "vm", "create", "--name", "user1")
	_, errOut, code := in.run("banger", "image", "rm", "debian-bookworm")
	if code == 0 || !strings.Contains(errOut, "user1") || !strings.Contains(errOut, "--force") {
		t.Fatalf("image rm of an image in use: exit %d, %q", code, errOut)
	}
	in.ok("banger", "image", "rm", "--force", "debian-bookworm")
	if out := in.ok("banger", "image", "ls", "--json"); strings.Contains(out, "debian-bookworm") {
		t.Fatalf("image still listed after rm --force: %s", out)
	}
	// The kernel of a VM is not removable at all while the VM exists.
	if _, errOut, code := in.run("banger", "kernel", "rm", "debian-cloud"); code == 0 || !strings.Contains(errOut, "user1") {
		t.Fatalf("kernel rm while in use: exit %d, %q", code, errOut)
	}
	in.ok("banger", "vm", "start", "user1")
	in.ok("banger", "vm", "exec", "user1", "--", "true")
	// The agent answers before the init prints its last steps; what it
	// printed up to starting the agent is in the log for sure.
	logs := in.ok("banger", "vm", "logs", "user1")
	if !strings.Contains(logs, "banger-init: start agent") || !strings.Contains(logs, "banger-init: switch root") {
		t.Fatalf("vm logs lacks the guest init's boot lines:\n%s", logs)
	}
	if tail := in.ok("banger", "vm", "logs", "--lines", "2", "user1"); strings.Count(strings.TrimSpace(tail), "\n") > 2 {
		t.Fatalf("vm logs --lines 2 printed more:\n%s", tail)
	}
}

// Ten concurrent creates get ten distinct addresses and taps; removing them
// frees every lease and tap.
func TestConcurrentCreatesGetUniqueLeases(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	const n = 10
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if out, errOut, code := in.run("banger", "vm", "create", "--name", fmt.Sprintf("c%d", i), "--disk-size", "300M"); code != 0 {
				errs <- fmt.Sprintf("c%d: exit %d %s %s", i, code, out, errOut)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	var l api.VMList
	if err := json.Unmarshal([]byte(in.ok("banger", "vm", "ls", "--json")), &l); err != nil {
		t.Fatal(err)
	}
	ips, taps := map[string]bool{}, map[string]bool{}
	for _, vm := range l.VMs {
		if vm.IP == "" || vm.Tap == "" || ips[vm.IP] || taps[vm.Tap] {
			t.Fatalf("vm %s: ip %q tap %q (duplicate or missing) in %+v", vm.Name, vm.IP, vm.Tap, l.VMs)
		}
		ips[vm.IP], taps[vm.Tap] = true, true
	}
	if len(ips) != n {
		t.Fatalf("%d distinct addresses for %d vms", len(ips), n)
	}
	for tap := range taps {
		if err := exec.Command("ip", "link", "show", tap).Run(); err != nil {
			t.Fatalf("tap %s missing: %v", tap, err)
		}
	}
	for i := 0; i < n; i++ {
		in.ok("banger", "vm", "rm", fmt.Sprintf("c%d", i))
	}
	for tap := range taps {
		if err := exec.Command("ip", "link", "show", tap).Run(); err == nil {
			t.Fatalf("tap %s left after rm", tap)
		}
	}
	// The addresses are free again: a new VM gets the lowest one back.
	in.ok("banger", "vm", "create", "--name", "again", "--disk-size", "300M")
	if vm := in.inspect("again"); !ips[vm.IP] {
		t.Fatalf("new vm got %s, not a freed address", vm.IP)
	}
}
