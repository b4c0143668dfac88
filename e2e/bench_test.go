package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
)

// BenchmarkNoopCall measures a no-op API call (daemon.ping) through the real
// daemon's unix socket, connection included; reports p50 and p99.
func BenchmarkNoopCall(b *testing.B) {
	in := newBenchInstance(b)
	c := in.client()
	ctx := context.Background()
	for i := 0; i < 50; i++ { // warm up
		if _, err := rpc.Invoke(ctx, c, api.MethodDaemonPing, api.Empty{}); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := rpc.Invoke(ctx, c, api.MethodDaemonPing, api.Empty{}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(lat, 50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(percentile(lat, 99).Microseconds()), "p99-µs")
}

// BenchmarkStatusVsVersion runs `banger daemon status` and `banger version`
// as whole processes, alternating so both see the same machine noise, and
// reports both medians and their ratio (target: status ≤ 1.5× version).
func BenchmarkStatusVsVersion(b *testing.B) {
	in := newBenchInstance(b)
	run := func(args ...string) time.Duration {
		cmd := exec.Command(filepath.Join(binDir, "banger"), args...)
		cmd.Env = in.env()
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("banger %v: %v\n%s", args, err, out)
		}
		return time.Since(start)
	}
	var status, version []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		version = append(version, run("version"))
		status = append(status, run("daemon", "status"))
	}
	b.StopTimer()
	vs, st := percentile(version, 50), percentile(status, 50)
	b.ReportMetric(float64(vs.Microseconds())/1000, "version-median-ms")
	b.ReportMetric(float64(st.Microseconds())/1000, "status-median-ms")
	b.ReportMetric(float64(st)/float64(vs), "status/version")
}

func newBenchInstance(b *testing.B) *instance {
	in := newInstanceFromHome(b, b.TempDir())
	in.startDaemonWith()
	b.Cleanup(in.cleanup)
	return in
}

func percentile(d []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	return s[(len(s)-1)*p/100]
}
