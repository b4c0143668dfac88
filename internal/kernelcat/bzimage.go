package kernelcat

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// maxVMLinux caps a decompressed kernel payload; real ones are 30–80 MiB.
const maxVMLinux = 512 << 20

// maxKernelFile caps a kernel image read into memory.
const maxKernelFile = 256 << 20

// ErrNotKernel marks a file that is neither a bzImage nor an x86-64 ELF kernel.
var ErrNotKernel = errors.New("not an x86-64 bzImage or ELF vmlinux")

// bzImage is what the x86 boot protocol's setup header tells us.
type bzImage struct {
	Release string // from the kernel_version string
	Payload []byte // compressed vmlinux
}

// parseBzImage reads the x86 boot setup header (Documentation/arch/x86/boot.rst).
func parseBzImage(data []byte) (*bzImage, error) {
	if len(data) < 0x250 || string(data[0x202:0x206]) != "HdrS" {
		return nil, fmt.Errorf("no x86 setup header: %w", ErrNotKernel)
	}
	version := binary.LittleEndian.Uint16(data[0x206:])
	if version < 0x208 {
		return nil, fmt.Errorf("boot protocol %#x has no payload fields: %w", version, ErrNotKernel)
	}
	setupSects := int(data[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	pmStart := (setupSects + 1) * 512
	off := int(binary.LittleEndian.Uint32(data[0x248:]))
	length := int(binary.LittleEndian.Uint32(data[0x24c:]))
	if off < 0 || length <= 4 || pmStart+off+length > len(data) || pmStart+off+length < pmStart {
		return nil, fmt.Errorf("payload %d+%d outside the %d-byte image: %w", off, length, len(data), ErrNotKernel)
	}
	b := &bzImage{Payload: data[pmStart+off : pmStart+off+length]}
	// kernel_version points (minus 0x200) at "6.1.0-41-cloud-amd64 (…) #1 SMP …".
	if kv := int(binary.LittleEndian.Uint16(data[0x20e:])); kv != 0 && kv+0x200 < len(data) {
		s := data[kv+0x200:]
		if i := bytes.IndexAny(s, " \x00"); i > 0 && i < 256 {
			b.Release = string(s[:i])
		}
	}
	return b, nil
}

// decompressPayload inflates a bzImage payload, choosing the codec by its
// magic, and never producing more than maxVMLinux bytes.
func decompressPayload(p []byte) ([]byte, error) {
	// Every codec but gzip has the uncompressed size appended (size_append
	// in arch/x86/boot/compressed/Makefile); strip it before decoding.
	body := p[:len(p)-4]
	var (
		r   io.Reader
		err error
	)
	switch {
	case bytes.HasPrefix(p, []byte{0x1f, 0x8b}):
		var gz *gzip.Reader
		gz, err = gzip.NewReader(bytes.NewReader(p))
		if err == nil {
			gz.Multistream(false)
			r = gz
		}
	case bytes.HasPrefix(p, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		r, err = xz.NewReader(bytes.NewReader(body))
	case bytes.HasPrefix(p, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		var z *zstd.Decoder
		z, err = zstd.NewReader(bytes.NewReader(body), zstd.WithDecoderMaxMemory(maxVMLinux), zstd.WithDecoderConcurrency(1))
		if err == nil {
			defer z.Close()
			r = z
		}
	case bytes.HasPrefix(p, []byte{0x5d, 0x00, 0x00}):
		r, err = lzma.NewReader(bytes.NewReader(body))
	case bytes.HasPrefix(p, []byte{0x02, 0x21, 0x4c, 0x18}):
		return decodeLZ4Legacy(body, maxVMLinux)
	default:
		return nil, fmt.Errorf("payload compression with magic % x is not supported (bzip2 and lzo are not)", p[:min(len(p), 6)])
	}
	if err != nil {
		return nil, err
	}
	out, err := io.ReadAll(io.LimitReader(r, maxVMLinux+1))
	if err != nil {
		return nil, err
	}
	if len(out) > maxVMLinux {
		return nil, fmt.Errorf("payload inflates past %d bytes", maxVMLinux)
	}
	return out, nil
}

// decodeLZ4Legacy decodes the LZ4 legacy frame the kernel uses: the magic,
// then blocks each prefixed by their compressed size (little-endian u32).
func decodeLZ4Legacy(in []byte, max int) ([]byte, error) {
	const magic = 0x184c2102
	var out []byte
	for len(in) >= 4 {
		n := binary.LittleEndian.Uint32(in)
		in = in[4:]
		if n == magic {
			continue // a new frame starts
		}
		if uint64(n) > uint64(len(in)) {
			return nil, fmt.Errorf("lz4 block of %d bytes past the end of input", n)
		}
		var err error
		out, err = decodeLZ4Block(in[:n], out, max)
		if err != nil {
			return nil, err
		}
		in = in[n:]
	}
	return out, nil
}

// decodeLZ4Block appends one decoded LZ4 block to out.
func decodeLZ4Block(src, out []byte, max int) ([]byte, error) {
	errCorrupt := errors.New("corrupt lz4 block")
	for i := 0; i < len(src); {
		token := src[i]
		i++
		lit := int(token >> 4)
		if lit == 15 {
			for {
				if i >= len(src) {
					return nil, errCorrupt
				}
				b := src[i]
				i++
				lit += int(b)
				if b != 255 {
					break
				}
			}
		}
		if lit > len(src)-i || len(out)+lit > max {
			return nil, errCorrupt
		}
		out = append(out, src[i:i+lit]...)
		i += lit
		if i == len(src) {
			break // the last sequence has literals only
		}
		if i+2 > len(src) {
			return nil, errCorrupt
		}
		offset := int(src[i]) | int(src[i+1])<<8
		i += 2
		ml := int(token & 15)
		if ml == 15 {
			for {
				if i >= len(src) {
					return nil, errCorrupt
				}
				b := src[i]
				i++
				ml += int(b)
				if b != 255 {
					break
				}
			}
		}
		ml += 4
		if offset == 0 || offset > len(out) || len(out)+ml > max {
			return nil, errCorrupt
		}
		start := len(out) - offset
		if offset >= ml {
			out = append(out, out[start:start+ml]...)
		} else {
			for k := 0; k < ml; k++ { // overlapping copy repeats the pattern
				out = append(out, out[start+k])
			}
		}
	}
	return out, nil
}

// ExtractVMLinux derives the uncompressed ELF vmlinux from a bzImage and
// checks it is an x86-64 executable with an entry point.
func ExtractVMLinux(bz []byte) ([]byte, error) {
	img, err := parseBzImage(bz)
	if err != nil {
		return nil, err
	}
	raw, err := decompressPayload(img.Payload)
	if err != nil {
		return nil, fmt.Errorf("decompress bzImage payload: %w", err)
	}
	if _, err := checkELF(raw); err != nil {
		return nil, fmt.Errorf("bzImage payload: %w", err)
	}
	return raw, nil
}

// elfInfo is what banger needs to know about an ELF kernel.
type elfInfo struct {
	Entry uint64
	PVH   bool // has the Xen PVH entry note QEMU needs to boot an ELF directly
}

func checkELF(data []byte) (elfInfo, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return elfInfo{}, fmt.Errorf("%w: %w", ErrNotKernel, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 || f.Type != elf.ET_EXEC {
		return elfInfo{}, fmt.Errorf("ELF %s %s %s: %w", f.Class, f.Machine, f.Type, ErrNotKernel)
	}
	if f.Entry == 0 {
		return elfInfo{}, fmt.Errorf("ELF without an entry point: %w", ErrNotKernel)
	}
	info := elfInfo{Entry: f.Entry}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE || p.Filesz > 1<<20 {
			continue
		}
		notes, err := io.ReadAll(p.Open())
		if err == nil && hasNote(notes, "Xen", 18) { // XEN_ELFNOTE_PHYS32_ENTRY
			info.PVH = true
		}
	}
	return info, nil
}

// hasNote walks ELF notes looking for name/type.
func hasNote(b []byte, name string, typ uint32) bool {
	align4 := func(n uint32) uint32 { return (n + 3) &^ 3 }
	for len(b) >= 12 {
		nsz, dsz, t := binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]), binary.LittleEndian.Uint32(b[8:])
		b = b[12:]
		if uint64(align4(nsz))+uint64(align4(dsz)) > uint64(len(b)) {
			return false
		}
		n := string(bytes.TrimRight(b[:nsz], "\x00"))
		if n == name && t == typ {
			return true
		}
		b = b[align4(nsz)+align4(dsz):]
	}
	return false
}

// readKernelFile reads a kernel image with a size cap.
func readKernelFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKernelFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKernelFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, maxKernelFile)
	}
	return data, nil
}

// elfRelease finds "Linux version X " in an ELF kernel's bytes.
func elfRelease(data []byte) string {
	const marker = "Linux version "
	i := bytes.Index(data, []byte(marker))
	if i < 0 {
		return ""
	}
	s := data[i+len(marker):]
	if j := bytes.IndexAny(s, " \x00"); j > 0 && j < 256 {
		return string(s[:j])
	}
	return ""
}
