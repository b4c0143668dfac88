package e2e

import (
	"slices"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/testutil"
)

// Shell completion names VMs, images and kernels from a running daemon;
// errors about them name the command to run next.
func TestCompletionNames(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	in.ok("banger", "vm", "create", "--name", "comp-one")
	in.ok("banger", "vm", "create", "--name", "comp-two")
	complete := func(args ...string) []string {
		t.Helper()
		out := in.ok("banger", append([]string{"__complete"}, args...)...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		// The last line is cobra's directive (":4": no file completion).
		if len(lines) == 0 || lines[len(lines)-1] != ":4" {
			t.Fatalf("__complete %v: %q", args, out)
		}
		return lines[:len(lines)-1]
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"vm", "stop", ""}, []string{"comp-one", "comp-two"}},
		{[]string{"vm", "rm", "comp-one", ""}, []string{"comp-two"}},
		{[]string{"vm", "shell", "comp-t"}, []string{"comp-two"}},
		{[]string{"image", "rm", ""}, []string{"debian-bookworm"}},
		{[]string{"kernel", "inspect", ""}, []string{"debian-cloud"}},
		{[]string{"vm", "create", "--image", ""}, []string{"debian-bookworm"}},
		{[]string{"vm", "run", "--kernel", ""}, []string{"debian-cloud"}},
	} {
		got := complete(c.args...)
		slices.Sort(got)
		if !slices.Equal(got, c.want) {
			t.Errorf("__complete %q = %q, want %q", c.args, got, c.want)
		}
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"image", "rm", "nope"}, "banger image ls"},
		{[]string{"kernel", "rm", "nope"}, "banger kernel ls"},
		{[]string{"image", "rm", "debian-bookworm"}, "banger vm rm -f comp-one comp-two"},
		{[]string{"kernel", "rm", "debian-cloud"}, "banger vm rm -f comp-one comp-two"},
		{[]string{"vm", "exec", "comp-one", "--", "true"}, "banger vm start comp-one"},
		{[]string{"vm", "inspect", "nope"}, "banger vm ls"},
	} {
		_, stderr, code := in.run("banger", c.args...)
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("banger %q: exit %d, stderr %q; want it to name %q", c.args, code, stderr, c.want)
		}
	}
}
