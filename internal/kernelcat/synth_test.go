package kernelcat

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// makeELF builds a minimal x86-64 ET_EXEC kernel-like ELF: one PT_LOAD,
// optionally a PT_NOTE with the Xen PVH entry note, and a "Linux version"
// string so the release can be read from it.
func makeELF(t testing.TB, pvh bool, release string) []byte {
	t.Helper()
	var note bytes.Buffer
	if pvh {
		binary.Write(&note, binary.LittleEndian, []uint32{4, 4, 18})
		note.WriteString("Xen\x00")
		binary.Write(&note, binary.LittleEndian, uint32(0x1000000))
	}
	body := []byte("Linux version " + release + " (test@example) #1 SMP\x00")
	phnum := 1
	if pvh {
		phnum = 2
	}
	const ehsize, phsize = 64, 56
	dataOff := uint64(ehsize + phsize*phnum)
	noteOff := dataOff + uint64(len(body))
	var b bytes.Buffer
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0})
	b.Write(make([]byte, 8))
	binary.Write(&b, binary.LittleEndian, struct {
		Type, Machine       uint16
		Version             uint32
		Entry, Phoff, Shoff uint64
		Flags               uint32
		Ehsize, Phentsize   uint16
		Phnum, Shentsize    uint16
		Shnum, Shstrndx     uint16
	}{2, 62, 1, 0x1000000, ehsize, 0, 0, ehsize, phsize, uint16(phnum), 64, 0, 0})
	type phdr struct {
		Type, Flags                             uint32
		Off, Vaddr, Paddr, Filesz, Memsz, Align uint64
	}
	binary.Write(&b, binary.LittleEndian, phdr{1, 5, 0, 0x1000000, 0x1000000, noteOff + uint64(note.Len()), noteOff + uint64(note.Len()), 0x1000})
	if pvh {
		binary.Write(&b, binary.LittleEndian, phdr{4, 4, noteOff, 0, 0, uint64(note.Len()), uint64(note.Len()), 4})
	}
	b.Write(body)
	b.Write(note.Bytes())
	return b.Bytes()
}

// compress encodes raw the way the kernel build does for codec, including
// the appended little-endian size for every codec but gzip.
func compress(t testing.TB, codec string, raw []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	switch codec {
	case "gzip":
		w := gzip.NewWriter(&out)
		w.Write(raw)
		w.Close()
		return out.Bytes()
	case "xz":
		w, err := xz.NewWriter(&out)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(raw)
		w.Close()
	case "zstd":
		w, err := zstd.NewWriter(&out)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(raw)
		w.Close()
	case "lzma":
		w, err := lzma.NewWriter(&out)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(raw)
		w.Close()
	case "lz4":
		// Legacy frame, literal-only blocks: valid LZ4 any decoder accepts.
		binary.Write(&out, binary.LittleEndian, uint32(0x184c2102))
		for off := 0; off < len(raw); off += 1000 {
			chunk := raw[off:min(off+1000, len(raw))]
			var blk bytes.Buffer
			n := len(chunk)
			if n >= 15 {
				blk.WriteByte(0xf0)
				rest := n - 15
				for ; rest >= 255; rest -= 255 {
					blk.WriteByte(255)
				}
				blk.WriteByte(byte(rest))
			} else {
				blk.WriteByte(byte(n << 4))
			}
			blk.Write(chunk)
			binary.Write(&out, binary.LittleEndian, uint32(blk.Len()))
			out.Write(blk.Bytes())
		}
	default:
		t.Fatalf("unknown codec %s", codec)
	}
	binary.Write(&out, binary.LittleEndian, uint32(len(raw)))
	return out.Bytes()
}

// makeBzImage wraps payload in an x86 boot setup header the way the
// kernel's build tool lays it out.
func makeBzImage(t testing.TB, payload []byte, release string) []byte {
	t.Helper()
	const setupSects = 3
	pm := (setupSects + 1) * 512
	img := make([]byte, pm+0x100)
	img[0x1f1] = setupSects
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x20f)
	kv := 0x300
	copy(img[kv:], release+" (test@example) #1 SMP\x00")
	binary.LittleEndian.PutUint16(img[0x20e:], uint16(kv-0x200))
	binary.LittleEndian.PutUint32(img[0x248:], 0x100) // payload_offset from pm start
	binary.LittleEndian.PutUint32(img[0x24c:], uint32(len(payload)))
	img = append(img, payload...)
	return append(img, make([]byte, 512)...) // trailing signature space, as in signed images
}
