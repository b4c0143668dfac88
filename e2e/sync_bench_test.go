package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
)

// slowOK runs a banger command that may take longer than in.ok's 60 s (a
// 200 MiB transfer over the agent channel of a TCG guest).
func slowOK(b *testing.B, in *instance, args ...string) string {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "banger"), args...)
	cmd.Env = in.env()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		b.Fatalf("banger %v: %v\n%s", args, err, errOut.String())
	}
	return out.String()
}

// timedSync runs one `vm sync --json` and returns its wall time and the
// round's own account of where the time went.
func timedSync(b *testing.B, in *instance, args ...string) (time.Duration, api.SyncResult) {
	b.Helper()
	start := time.Now()
	out := slowOK(b, in, append([]string{"vm", "sync", "--json"}, args...)...)
	took := time.Since(start)
	var r api.SyncResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		b.Fatalf("vm sync --json printed %q: %v", out, err)
	}
	return took, r
}

// BenchmarkSyncTouch10 syncs a 10,000-file tree once, then per round
// touches 10 files (mtime only: they are hashed on both sides, nothing is
// sent) and modifies 10 others (same size: hashed and sent), each followed
// by one `banger vm sync` process, timed whole. An untimed round settles
// the tree after each upload, so each touch round meets a tree already
// synced (an upload changes the guest: the round after one lists it in
// full, as a guest-side change would).
func BenchmarkSyncTouch10(b *testing.B) {
	in := benchVM(b, "syncb")
	host := filepath.Join(b.TempDir(), "tree")
	for d := range 100 {
		for f := range 100 {
			p := filepath.Join(host, fmt.Sprintf("d%03d", d), fmt.Sprintf("f%03d.txt", f))
			if f == 0 {
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					b.Fatal(err)
				}
			}
			if err := os.WriteFile(p, fmt.Appendf(nil, "file %d/%d\n", d, f), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	start := time.Now()
	slowOK(b, in, "vm", "sync", host, "syncb:/root/tree")
	b.ReportMetric(time.Since(start).Seconds(), "initial-10k-s")
	settle := func() { timedSync(b, in, host, "syncb:/root/tree") }
	settle()
	var touchT, modT, manifestT, localT []time.Duration
	cachedRounds := 0
	for i := 0; i < b.N; i++ {
		now := time.Now()
		for k := range 10 {
			p := filepath.Join(host, fmt.Sprintf("d%03d", (i*10+k)%100), "f001.txt")
			if err := os.Chtimes(p, now, now); err != nil {
				b.Fatal(err)
			}
		}
		took, r := timedSync(b, in, host, "syncb:/root/tree")
		touchT = append(touchT, took)
		if r.CachedListing {
			cachedRounds++
		}
		manifestT = append(manifestT, time.Duration(r.ManifestMS*float64(time.Millisecond)))
		localT = append(localT, time.Duration(r.LocalMS*float64(time.Millisecond)))
		for k := range 10 {
			p := filepath.Join(host, fmt.Sprintf("d%03d", (i*10+k)%100), "f002.txt")
			if err := os.WriteFile(p, fmt.Appendf(nil, "FILE %d/%d\n", (i*10+k)%100, 2), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		took, _ = timedSync(b, in, host, "syncb:/root/tree")
		modT = append(modT, took)
		settle()
	}
	b.ReportMetric(float64(cachedRounds), "touch10-cached-listings")
	b.ReportMetric(float64(percentile(touchT, 50).Microseconds())/1000, "touch10-median-ms")
	b.ReportMetric(float64(percentile(modT, 50).Microseconds())/1000, "modify10-median-ms")
	b.ReportMetric(float64(percentile(manifestT, 50).Microseconds())/1000, "touch10-guest-listing-ms")
	b.ReportMetric(float64(percentile(localT, 50).Microseconds())/1000, "touch10-host-walk-ms")
}

// BenchmarkSyncInitialVsCp sends the same 200 MiB tree (200 files of
// 1 MiB in 10 directories) into an empty guest directory with vm sync and
// with vm cp, alternating, each as a whole banger process.
func BenchmarkSyncInitialVsCp(b *testing.B) {
	in := benchVM(b, "syncc")
	host := filepath.Join(b.TempDir(), "big")
	buf := make([]byte, 1<<20)
	for d := range 10 {
		dir := filepath.Join(host, fmt.Sprintf("d%d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for f := range 20 {
			_, _ = rand.Read(buf)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d.bin", f)), buf, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	var syncT, cpT []time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		slowOK(b, in, "vm", "sync", host, "syncc:/root/s/big")
		syncT = append(syncT, time.Since(start))
		in.ok("banger", "vm", "exec", "syncc", "--", "rm", "-rf", "/root/s")
		start = time.Now()
		slowOK(b, in, "vm", "cp", host, "syncc:/root/c")
		cpT = append(cpT, time.Since(start))
		in.ok("banger", "vm", "exec", "syncc", "--", "rm", "-rf", "/root/c")
	}
	sm, cm := percentile(syncT, 50), percentile(cpT, 50)
	b.ReportMetric(sm.Seconds(), "sync-s")
	b.ReportMetric(cm.Seconds(), "cp-s")
	b.ReportMetric(sm.Seconds()/cm.Seconds(), "sync/cp")
}
