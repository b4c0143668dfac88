package imagepull

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"

	"github.com/bangerdev/banger/internal/ext4"
	"github.com/bangerdev/banger/internal/testutil"
)

// benchContent generates a rootfs-like tree as nLayers gzip layer blobs:
// many small files and a few large ones, about totalMB in all, half random
// and half repetitive so it compresses like real binaries and text.
func benchContent(b *testing.B, files, totalMB, nLayers int) [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	pool := make([]byte, 8<<20)
	for i := range pool[:len(pool)/2] {
		pool[i] = byte(rng.Uint32())
	}
	for i := len(pool) / 2; i < len(pool); i++ {
		pool[i] = "the quick brown fox jumps over the lazy dog\n"[i%44]
	}
	large := files / 100
	small := files - large
	smallAvg := int64(totalMB) << 20 * 2 / 5 / int64(small) // 40% of bytes in small files
	largeSize := int64(totalMB) << 20 * 3 / 5 / int64(max(large, 1))
	tws := make([]*tar.Writer, nLayers)
	bufs := make([]*bytes.Buffer, nLayers)
	for i := range tws {
		bufs[i] = &bytes.Buffer{}
		tws[i] = tar.NewWriter(bufs[i])
	}
	for d := range 100 {
		for _, tw := range tws {
			tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("usr/share/d%03d/", d), Typeflag: tar.TypeDir, Mode: 0o755, ModTime: testMtime})
		}
	}
	for i := range files {
		size := rng.Int64N(2*smallAvg) + 1
		if i < large {
			size = largeSize
		}
		size = min(size, int64(len(pool)))
		off := rng.Int64N(int64(len(pool)) - size + 1)
		tw := tws[i%nLayers]
		h := &tar.Header{Name: fmt.Sprintf("usr/share/d%03d/f%05d", i%100, i), Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: testMtime}
		if err := tw.WriteHeader(h); err != nil {
			b.Fatal(err)
		}
		tw.Write(pool[off : off+size])
	}
	var blobs [][]byte
	for i, tw := range tws {
		tw.Close()
		var z bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&z, gzip.BestSpeed)
		io.Copy(zw, bufs[i])
		zw.Close()
		blobs = append(blobs, z.Bytes())
	}
	return blobs
}

// BenchmarkPullFlattenExt4 measures a pull of a generated rootfs (default
// ~200 MB in ~10k files over 4 layers; -short: ~20 MB, 1k files) against
// the baseline of `tar -x` of the same layer blobs plus `mkfs.ext4 -d`.
//
//	go test -run '^$' -bench PullFlattenExt4 -benchtime 3x ./internal/imagepull/
func BenchmarkPullFlattenExt4(b *testing.B) {
	for _, tool := range []string{"mkfs.ext4", "debugfs", "tar", "gzip"} {
		testutil.RequireBinary(b, tool)
	}
	files, mb := 10000, 200
	if testing.Short() {
		files, mb = 1000, 20
	}
	if v, err := strconv.Atoi(os.Getenv("BANGER_BENCH_MB")); err == nil && v > 0 {
		files, mb = v*50, v
	}
	blobs := benchContent(b, files, mb, 4)
	reg := startRegistry(b)
	var layers []v1.Layer
	for _, blob := range blobs {
		layers = append(layers, gzLayer(b, blob)) // already gzip: used as is
	}
	img := image(b, "linux/amd64", layers...)
	ref := reg.push(b, "bench/rootfs:v1", img)
	work := b.TempDir()
	var compressed int64
	blobFiles := make([]string, len(blobs))
	for i, blob := range blobs {
		blobFiles[i] = filepath.Join(work, fmt.Sprintf("layer%d.tar.gz", i))
		os.WriteFile(blobFiles[i], blob, 0o644)
		compressed += int64(len(blob))
	}
	b.Logf("content: %d files, ~%d MB, %d layers, %d MB compressed", files, mb, len(blobs), compressed>>20)
	ctx := context.Background()
	warmCache := filepath.Join(work, "layers-warm")
	if _, err := Pull(ctx, ref, filepath.Join(work, "prime.ext4"), Options{LayersDir: warmCache, Insecure: true}); err != nil {
		b.Fatal(err)
	}
	os.Remove(filepath.Join(work, "prime.ext4"))

	b.Run("pull-warm-cache", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			dest := filepath.Join(work, "warm.ext4")
			if _, err := Pull(ctx, ref, dest, Options{LayersDir: warmCache, Insecure: true}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			os.Remove(dest)
			b.StartTimer()
		}
	})
	b.Run("pull-warm-cache-rootless", func(b *testing.B) {
		// Ownership recorded and applied with debugfs, as a non-root daemon does.
		for i := 0; i < b.N; i++ {
			dest := filepath.Join(work, "warm-rootless.ext4")
			if _, err := Pull(ctx, ref, dest, Options{LayersDir: warmCache, Insecure: true, RecordOwnership: true}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			os.Remove(dest)
			b.StartTimer()
		}
	})
	b.Run("pull-cold-cache", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			cache := filepath.Join(work, "layers-cold")
			dest := filepath.Join(work, "cold.ext4")
			if _, err := Pull(ctx, ref, dest, Options{LayersDir: cache, Insecure: true}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			os.Remove(dest)
			os.RemoveAll(cache)
			b.StartTimer()
		}
	})
	b.Run("tar-x-mkfs-baseline", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			dir, err := os.MkdirTemp(work, "tarx-")
			if err != nil {
				b.Fatal(err)
			}
			for _, f := range blobFiles {
				if out, err := exec.Command("tar", "--numeric-owner", "-xpzf", f, "-C", dir).CombinedOutput(); err != nil {
					b.Fatalf("tar: %v %s", err, out)
				}
			}
			u, err := ext4.MeasureTree(dir)
			if err != nil {
				b.Fatal(err)
			}
			size := (u.Bytes+u.Bytes/5+64<<20)/(4<<20)*(4<<20) + 4<<20
			img := filepath.Join(work, "baseline.ext4")
			if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", dir, img, strconv.FormatInt(size>>10, 10)+"k").CombinedOutput(); err != nil {
				b.Fatalf("mkfs: %v %s", err, out)
			}
			os.RemoveAll(dir) // Pull removes its tree too
			b.StopTimer()
			os.Remove(img)
			b.StartTimer()
		}
	})
}
