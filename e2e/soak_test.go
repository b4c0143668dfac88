package e2e

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
)

// EnvSoakCycles sets how many `vm run --rm -- true` cycles TestSoak runs
// (make soak: 300; the default keeps make test short).
const EnvSoakCycles = "BANGER_SOAK_CYCLES"

const soakDefaultCycles = 30

// soakState is what must be the same after the soak as before it.
type soakState struct {
	QEMU        []string
	Links       []string
	NFT         string
	Mounts      []string
	Files       []string // under BANGER_HOME, logs excepted
	DaemonPID   int
	DaemonFDs   int
	DaemonGor   int
	HelperPID   int
	HelperFDs   int
	HelperGor   int
	HelperProcs int // processes of the helper's session: none may pile up
}

func soakSnapshot(t *testing.T, in *instance) soakState {
	t.Helper()
	var s soakState
	r := &faultRig{in: in}
	h := r.state(t)
	s.QEMU, s.Links, s.NFT = h.QEMU, h.Links, h.NFT
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mi), "\n") {
		// The mount namespace is the machine's: other tests mount and
		// unmount in it. Banger's own would be under its home or /run/banger.
		if f := strings.Fields(l); len(f) > 4 && (strings.HasPrefix(f[4], in.home) || strings.HasPrefix(f[4], "/run/banger")) {
			s.Mounts = append(s.Mounts, f[4])
		}
	}
	sort.Strings(s.Mounts)
	filepath.WalkDir(in.home, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(in.home, p)
		// Logs grow, the store's WAL and lock come and go with SQLite's
		// checkpoints; everything else must be as it was.
		if strings.HasSuffix(rel, ".log") || strings.HasPrefix(filepath.Base(rel), "banger.db-") {
			return nil
		}
		s.Files = append(s.Files, rel)
		return nil
	})
	st, err := rpc.Invoke(context.Background(), in.client(), api.MethodDaemonStatus, api.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Resources == nil || st.Helper.Resources == nil {
		t.Fatalf("daemon status carries no resource counts: %+v", st)
	}
	s.DaemonPID, s.DaemonFDs, s.DaemonGor = st.PID, st.Resources.FDs, st.Resources.Goroutines
	s.HelperPID, s.HelperFDs, s.HelperGor = st.Helper.PID, st.Helper.Resources.FDs, st.Helper.Resources.Goroutines
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
			// Children of the helper (ip, nft, …) must all have exited.
			if f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); len(f) > 1 && f[1] == strconv.Itoa(st.Helper.PID) && pid != st.Helper.PID {
				s.HelperProcs++
			}
		}
	}
	return s
}

// soakSettled snapshots until two in a row agree (a status call's own
// connection, a DNS push, come and go), at most a few seconds.
func soakSettled(t *testing.T, in *instance) soakState {
	t.Helper()
	prev := soakSnapshot(t, in)
	for i := 0; i < 20; i++ {
		time.Sleep(250 * time.Millisecond)
		cur := soakSnapshot(t, in)
		if fmt.Sprint(cur) == fmt.Sprint(prev) {
			return cur
		}
		prev = cur
	}
	return prev
}

// TestSoak runs vm run --rm -- true again and again: every cycle must
// succeed, the host must hold exactly what it held before (processes, taps,
// nftables rules, mounts, files, descriptors and goroutines of the daemon
// and the helper), and the last cycles must be as fast as the first.
func TestSoak(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	cycles := soakDefaultCycles
	if v := os.Getenv(EnvSoakCycles); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 6 {
			t.Fatalf("%s=%q: want a number of cycles, at least 6", EnvSoakCycles, v)
		}
		cycles = n
	}
	in := vmInstance(t)
	run := func() (time.Duration, string, int) {
		start := time.Now()
		out, errOut, code := in.run("banger", "vm", "run", "--rm", "--memory", "256M", "--", "true")
		return time.Since(start), out + errOut, code
	}
	// One cycle first: the bridge, tables, helper and caches (initramfs)
	// a first VM makes stay for the next ones, as they should.
	if _, out, code := run(); code != 0 {
		t.Fatalf("warm-up cycle: exit %d: %s", code, out)
	}
	before := soakSettled(t, in)
	times := make([]time.Duration, 0, cycles)
	var failures []string
	for i := 0; i < cycles; i++ {
		d, out, code := run()
		times = append(times, d)
		if code != 0 {
			failures = append(failures, fmt.Sprintf("cycle %d: exit %d: %s", i, code, out))
			if len(failures) > 3 {
				break
			}
		}
	}
	if len(failures) > 0 {
		t.Fatalf("%d of %d cycles failed:\n%s\ndaemon log tail:\n%s", len(failures), len(times), strings.Join(failures, "\n"), tail(readFile(in.p.DaemonLog()), 40))
	}
	after := soakSettled(t, in)
	if d := soakDiff(before, after); d != "" {
		t.Errorf("after %d cycles the host differs:\n%s", cycles, d)
	}
	w := min(30, cycles/3)
	first, last := median(times[:w]), median(times[len(times)-w:])
	ratio := float64(last) / float64(first)
	t.Logf("soak: %d cycles, all passed; median cycle of the first %d %s, of the last %d %s (%.3f×); min %s, max %s",
		cycles, w, first.Round(time.Millisecond), w, last.Round(time.Millisecond), ratio, slices.Min(times).Round(time.Millisecond), slices.Max(times).Round(time.Millisecond))
	// 10% holds the soak (windows of 30). Windows of 10 on a shared
	// machine swing more than that with the load: the short run only
	// catches a gross slowdown.
	limit := 1.10
	if w < 30 {
		limit = 1.50
	}
	if ratio > limit {
		t.Errorf("the last %d cycles are %.0f%% slower than the first (median %s → %s; limit %.0f%%)", w, (ratio-1)*100, first, last, (limit-1)*100)
	}
}

// soakDiff names each field that changed, with only the lines that differ
// (the nftables ruleset alone is a hundred lines).
func soakDiff(before, after soakState) string {
	var b strings.Builder
	bv, av := reflect.ValueOf(before), reflect.ValueOf(after)
	for i := range bv.NumField() {
		name := bv.Type().Field(i).Name
		x, y := bv.Field(i).Interface(), av.Field(i).Interface()
		if reflect.DeepEqual(x, y) {
			continue
		}
		var xl, yl []string
		switch v := x.(type) {
		case string:
			xl, yl = strings.Split(v, "\n"), strings.Split(y.(string), "\n")
		case []string:
			xl, yl = v, y.([]string)
		default:
			fmt.Fprintf(&b, "%s: %v → %v\n", name, x, y)
			continue
		}
		fmt.Fprintf(&b, "%s:\n", name)
		for _, l := range xl {
			if !slices.Contains(yl, l) {
				fmt.Fprintf(&b, "  - %s\n", l)
			}
		}
		for _, l := range yl {
			if !slices.Contains(xl, l) {
				fmt.Fprintf(&b, "  + %s\n", l)
			}
		}
		if len(xl) != len(yl) {
			fmt.Fprintf(&b, "  (%d lines → %d)\n", len(xl), len(yl))
		}
	}
	return b.String()
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestSoakDiff: a soak failure names only what changed, so a truncated CI
// log still shows it.
func TestSoakDiff(t *testing.T) {
	a := soakState{Links: []string{"lo", "banger0"}, NFT: "table x\n\trule a\n\trule b", DaemonFDs: 17}
	b := soakState{Links: []string{"lo", "banger0", "bt-1"}, NFT: "table x\n\trule a", DaemonFDs: 17, HelperProcs: 1}
	got := soakDiff(a, b)
	for _, want := range []string{"Links:\n  + bt-1", "NFT:\n  - \trule b", "HelperProcs: 0 → 1"} {
		if !strings.Contains(got, want) {
			t.Errorf("soakDiff lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "DaemonFDs") || strings.Contains(got, "rule a") {
		t.Errorf("soakDiff names what did not change:\n%s", got)
	}
	if d := soakDiff(a, a); d != "" {
		t.Errorf("identical states differ: %q", d)
	}
}
