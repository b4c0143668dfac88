package kernelcat

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"testing"
)

// allocated runs fn and returns the bytes the process allocated meanwhile:
// a fuzz worker runs one input at a time, so this is fn's own allocation.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// FuzzDecodeLZ4 feeds hostile LZ4 legacy frames to the decoder. Whatever
// the input, it must not panic, never return more than its cap and
// allocate only in proportion to that cap (append's doubling: a few times
// the cap), not to lengths the input claims. Any input also round-trips
// through the literal-only encoder the kernel-build fixtures use.
func FuzzDecodeLZ4(f *testing.F) {
	const limit = 64 << 10
	f.Add(compress(f, "lz4", []byte("hello, kernel")))
	f.Add(compress(f, "lz4", bytes.Repeat([]byte("abcdefgh"), 2000)))
	// RLE match far longer than the cap.
	f.Add(append([]byte{0x02, 0x21, 0x4c, 0x18, 8, 0, 0, 0}, 0x1f, 'a', 1, 0, 255, 255, 255, 10))
	// A block length past the end of the input.
	f.Add([]byte{0x02, 0x21, 0x4c, 0x18, 0xff, 0xff, 0xff, 0xff, 0x10})
	// A match reaching before the start of the output.
	f.Add([]byte{0x02, 0x21, 0x4c, 0x18, 4, 0, 0, 0, 0x10, 'a', 5, 0})
	// A literal run length that never ends.
	f.Add([]byte{0x02, 0x21, 0x4c, 0x18, 5, 0, 0, 0, 0xf0, 255, 255, 255, 255})
	f.Fuzz(func(t *testing.T, in []byte) {
		var (
			out []byte
			err error
		)
		n := allocated(func() { out, err = decodeLZ4Legacy(in, limit) })
		if len(out) > limit {
			t.Fatalf("decoded %d bytes past the %d cap", len(out), limit)
		}
		if err != nil && out != nil {
			t.Fatalf("error %v came with %d bytes of output", err, len(out))
		}
		if bound := uint64(8*limit + 4096); n > bound {
			t.Fatalf("decoding %d input bytes allocated %d bytes, more than %d for a %d-byte cap", len(in), n, bound, limit)
		}
		// Round trip: the input as raw data, literal-encoded, decodes to itself.
		enc := compress(t, "lz4", in)
		got, err := decodeLZ4Legacy(enc[:len(enc)-4], len(in))
		if err != nil || !bytes.Equal(got, in) {
			t.Fatalf("round trip of %d bytes: %d bytes back, err %v", len(in), len(got), err)
		}
	})
}

// FuzzExtractVMLinux feeds hostile bzImages (setup header plus payload in
// every codec banger decodes) to ExtractVMLinux: no panic; success only for
// an x86-64 ELF within the output cap; allocation bounded by that cap
// (never by a size the image claims).
func FuzzExtractVMLinux(f *testing.F) {
	elf := makeELF(f, true, "6.1.0-fuzz")
	for _, codec := range []string{"gzip", "xz", "zstd", "lzma", "lz4"} {
		f.Add(makeBzImage(f, compress(f, codec, elf), "6.1.0-fuzz"))
	}
	// Hostile headers: payload length past the image, offset overflow, old protocol.
	bad := makeBzImage(f, compress(f, "gzip", elf), "x")
	binary.LittleEndian.PutUint32(bad[0x24c:], 0xffffffff)
	f.Add(bad)
	bad = makeBzImage(f, compress(f, "lz4", elf), "x")
	binary.LittleEndian.PutUint32(bad[0x248:], 0xfffffff0)
	f.Add(bad)
	bad = makeBzImage(f, compress(f, "xz", elf), "x")
	binary.LittleEndian.PutUint16(bad[0x206:], 0x200)
	f.Add(bad)
	// An lzma header claiming a 4 GiB dictionary and size.
	f.Add(makeBzImage(f, []byte{0x5d, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, "x"))
	f.Fuzz(func(t *testing.T, bz []byte) {
		var (
			out []byte
			err error
		)
		n := allocated(func() { out, err = ExtractVMLinux(bz) })
		if err != nil {
			if out != nil {
				t.Fatalf("error %v came with %d bytes of output", err, len(out))
			}
		} else {
			if len(out) > maxVMLinux {
				t.Fatalf("extracted %d bytes past the %d cap", len(out), maxVMLinux)
			}
			if _, err := checkELF(out); err != nil {
				t.Fatalf("accepted a payload that is not an x86-64 ELF: %v", err)
			}
		}
		if bound := uint64(3*maxVMLinux + 64<<20); n > bound {
			t.Fatalf("a %d-byte image allocated %d bytes, more than %d", len(bz), n, bound)
		}
	})
}
