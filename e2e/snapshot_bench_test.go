package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/testutil"
)

// snapBenchRun runs banger with a longer bound than instance.run (a fork of
// ten clones under TCG takes longer than its minute).
func snapBenchRun(b *testing.B, in *instance, args ...string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "banger"), args...)
	cmd.Env = in.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("banger %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// BenchmarkSnapshotRunFromTemplate compares `vm run --rm --template T --
// true` with `vm run --rm --cold -- true` of the same shape, whole
// processes, alternating (target: template ≤ 0.2× cold).
func BenchmarkSnapshotRunFromTemplate(b *testing.B) {
	if os.Getenv(testutil.EnvInNetNS) != "1" {
		b.Skip("run inside a network namespace: scripts/bench.sh does (unshare -n)")
	}
	in := vmInstance(b)
	snapBenchRun(b, in, "template", "create", "bench", "--cpus", "2", "--memory", "1G")
	var tmpl, cold []time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		in.ok("banger", "vm", "run", "--rm", "--template", "bench", "--", "true")
		tmpl = append(tmpl, time.Since(start))
		start = time.Now()
		in.ok("banger", "vm", "run", "--rm", "--cold", "--cpus", "2", "--memory", "1G", "--", "true")
		cold = append(cold, time.Since(start))
	}
	tm, cm := percentile(tmpl, 50), percentile(cold, 50)
	b.ReportMetric(float64(tm.Milliseconds()), "template-median-ms")
	b.ReportMetric(float64(cm.Milliseconds()), "cold-median-ms")
	b.ReportMetric(float64(tm)/float64(cm), "template/cold")
}

// BenchmarkSnapshotFork10 times `vm fork SNAP --count 10` against ten cold
// `vm create --start` (target ≤ 0.15×), then compares the proportional set
// size of the ten idle clones' qemu processes with that of the ten cold
// VMs (smaps_rollup Pss; target ≤ 0.4×).
func BenchmarkSnapshotFork10(b *testing.B) {
	if os.Getenv(testutil.EnvInNetNS) != "1" {
		b.Skip("run inside a network namespace: scripts/bench.sh does (unshare -n)")
	}
	const n, mem = 10, "512M"
	in := vmInstance(b)
	in.ok("banger", "vm", "create", "--start", "--name", "fsrc", "--cpus", "1", "--memory", mem)
	in.ok("banger", "vm", "snapshot", "fsrc", "--as", "fbase", "--stop")
	for i := 0; i < b.N; i++ {
		start := time.Now()
		snapBenchRun(b, in, "vm", "fork", "fbase", "--name", fmt.Sprintf("f%d", i), "--count", strconv.Itoa(n))
		forkT := time.Since(start)
		start = time.Now()
		for j := 1; j <= n; j++ {
			snapBenchRun(b, in, "vm", "create", "--start", "--name", fmt.Sprintf("c%d-%d", i, j), "--cpus", "1", "--memory", mem)
		}
		coldT := time.Since(start)
		time.Sleep(10 * time.Second) // idle
		var forkPSS, coldPSS int64
		for j := 1; j <= n; j++ {
			forkPSS += snapPSSKiB(b, in, fmt.Sprintf("f%d-%d", i, j))
			coldPSS += snapPSSKiB(b, in, fmt.Sprintf("c%d-%d", i, j))
		}
		b.ReportMetric(forkT.Seconds(), "fork10-s")
		b.ReportMetric(coldT.Seconds(), "cold10-s")
		b.ReportMetric(float64(forkT)/float64(coldT), "fork/cold")
		b.ReportMetric(float64(forkPSS)/1024, "fork10-pss-MiB")
		b.ReportMetric(float64(coldPSS)/1024, "cold10-pss-MiB")
		b.ReportMetric(float64(forkPSS)/float64(coldPSS), "pss-fork/cold")
		for j := 1; j <= n; j++ {
			in.run("banger", "vm", "rm", "-f", fmt.Sprintf("f%d-%d", i, j))
			in.run("banger", "vm", "rm", "-f", fmt.Sprintf("c%d-%d", i, j))
		}
	}
}

// snapPSSKiB is the Pss of a running VM's qemu process.
func snapPSSKiB(b *testing.B, in *instance, vm string) int64 {
	b.Helper()
	var rec struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(in.ok("banger", "vm", "inspect", vm, "--json")), &rec); err != nil || rec.PID == 0 {
		b.Fatalf("vm %s has no pid: %v", vm, err)
	}
	for _, l := range strings.Split(readFile(fmt.Sprintf("/proc/%d/smaps_rollup", rec.PID)), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "Pss:" {
			kib, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kib
		}
	}
	b.Fatalf("no Pss for vm %s (pid %d)", vm, rec.PID)
	return 0
}
