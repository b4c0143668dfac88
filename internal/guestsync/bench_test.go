package guestsync

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkRoundTouch10 is the in-process cost of a round over a
// 10,000-file tree after touching 10 files (the agent on a unix socket):
// what the VM benchmark adds to it is the guest's and the channel's.
func BenchmarkRoundTouch10(b *testing.B) { benchTouch10(b, Options{}) }

// BenchmarkRoundTouch10Cached is the same round as vm sync runs it: the
// guest tracks its tree and the host keeps its listing, so the unchanged
// guest is not listed.
func BenchmarkRoundTouch10Cached(b *testing.B) {
	benchTouch10(b, Options{Cache: NewCache(), CacheKey: "vm\x00boot\x00guest"})
}

func benchTouch10(b *testing.B, opts Options) {
	c := startAgent(b)
	host, guest := b.TempDir(), b.TempDir()
	for d := range 100 {
		for f := range 100 {
			p := filepath.Join(host, fmt.Sprintf("d%03d", d), fmt.Sprintf("f%03d.txt", f))
			_ = os.MkdirAll(filepath.Dir(p), 0o755)
			_ = os.WriteFile(p, fmt.Appendf(nil, "file %d/%d\n", d, f), 0o644)
		}
	}
	ctx := context.Background()
	for range 2 { // the first upload voids the first listing
		if _, err := Run(ctx, c, host, guest, opts); err != nil {
			b.Fatal(err)
		}
	}
	var local, manifest, hash, apply time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		now := time.Now()
		for k := range 10 {
			_ = os.Chtimes(filepath.Join(host, fmt.Sprintf("d%03d", k), "f001.txt"), now, now)
		}
		res, err := Run(ctx, c, host, guest, opts)
		if err != nil {
			b.Fatal(err)
		}
		local, manifest, hash, apply = local+res.Local, manifest+res.Manifest, hash+res.Hash, apply+res.Apply
	}
	n := float64(b.N)
	b.ReportMetric(float64(local.Milliseconds())/n, "local-ms")
	b.ReportMetric(float64(manifest.Milliseconds())/n, "manifest-ms")
	b.ReportMetric(float64(hash.Milliseconds())/n, "hash-ms")
	b.ReportMetric(float64(apply.Milliseconds())/n, "apply-ms")
}
