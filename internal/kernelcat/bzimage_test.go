package kernelcat

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/model"
)

func TestExtractVMLinuxEveryCodec(t *testing.T) {
	raw := makeELF(t, true, "6.9.0-test")
	// Make the ELF compressible and larger than one lz4 chunk.
	raw = append(raw, bytes.Repeat([]byte("padding "), 2000)...)
	for _, codec := range []string{"gzip", "xz", "zstd", "lzma", "lz4"} {
		t.Run(codec, func(t *testing.T) {
			bz := makeBzImage(t, compress(t, codec, raw), "6.9.0-test")
			img, err := parseBzImage(bz)
			if err != nil {
				t.Fatal(err)
			}
			if img.Release != "6.9.0-test" {
				t.Errorf("release %q", img.Release)
			}
			got, err := ExtractVMLinux(bz)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, raw) {
				t.Fatalf("decompressed %d bytes differ from the %d-byte original", len(got), len(raw))
			}
			info, err := checkELF(got)
			if err != nil || !info.PVH || info.Entry != 0x1000000 {
				t.Fatalf("checkELF: %+v %v", info, err)
			}
		})
	}
}

func TestExtractVMLinuxRejectsBadInput(t *testing.T) {
	notELF := makeBzImage(t, compress(t, "gzip", []byte("just text, not an ELF kernel")), "1")
	if _, err := ExtractVMLinux(notELF); !errors.Is(err, ErrNotKernel) {
		t.Errorf("non-ELF payload: got %v", err)
	}
	if _, err := ExtractVMLinux([]byte("tiny")); !errors.Is(err, ErrNotKernel) {
		t.Errorf("tiny file: got %v", err)
	}
	bz := makeBzImage(t, compress(t, "xz", makeELF(t, false, "1")), "1")
	bz[0x24c+2] = 0x7f // payload_length far past the file
	if _, err := ExtractVMLinux(bz); !errors.Is(err, ErrNotKernel) {
		t.Errorf("payload past the end: got %v", err)
	}
	bzip2 := makeBzImage(t, append([]byte("BZh91AY&SY"), 0, 0, 0, 0), "1")
	if _, err := ExtractVMLinux(bzip2); err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Errorf("bzip2 payload: got %v", err)
	}
	corrupt := compress(t, "lz4", makeELF(t, false, "1"))
	corrupt[9] = 0xff // the literal length now runs past the block
	if _, err := ExtractVMLinux(makeBzImage(t, corrupt, "1")); err == nil {
		t.Errorf("corrupt lz4 accepted")
	}
}

func TestDecodeLZ4BlockBounds(t *testing.T) {
	// token: 1 literal, then a match of 4+15+255+... bytes at offset 1 (RLE).
	blk := []byte{0x1f, 'a', 1, 0, 255, 255, 255, 10}
	out, err := decodeLZ4Block(blk, nil, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + 4 + 15 + 255*3 + 10; len(out) != want || strings.Trim(string(out), "a") != "" {
		t.Fatalf("RLE decode: %d bytes, want %d", len(out), want)
	}
	if _, err := decodeLZ4Block(blk, nil, 100); err == nil {
		t.Fatal("output past the cap was accepted")
	}
	if _, err := decodeLZ4Block([]byte{0x10, 'a', 5, 0}, nil, 100); err == nil {
		t.Fatal("match offset before the start was accepted")
	}
}

func TestVMMSupport(t *testing.T) {
	fcConfig := []byte("CONFIG_VIRTIO_MMIO=y\nCONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_VIRTIO_NET=y\n")
	debian := []byte("CONFIG_VIRTIO_BLK=m\nCONFIG_VIRTIO_NET=m\nCONFIG_VIRTIO_MMIO=m\n# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set\n")
	vmms, notes := vmmSupport(true, true, true, fcConfig)
	if model.JoinVMMs(vmms, ",") != "qemu,firecracker" || len(notes) != 0 {
		t.Errorf("firecracker-ready kernel: %v %v", vmms, notes)
	}
	vmms, notes = vmmSupport(true, true, true, debian)
	if model.JoinVMMs(vmms, ",") != "qemu" || len(notes) != 1 || !strings.Contains(notes[0], "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=not set") || !strings.Contains(notes[0], "CONFIG_VIRTIO_BLK=m") {
		t.Errorf("debian-like kernel: %v %q", vmms, notes)
	}
	vmms, notes = vmmSupport(true, false, false, fcConfig)
	if model.JoinVMMs(vmms, ",") != "qemu" || !strings.Contains(strings.Join(notes, " "), "no uncompressed ELF vmlinux") {
		t.Errorf("bzImage without vmlinux: %v %v", vmms, notes)
	}
	vmms, notes = vmmSupport(false, true, false, fcConfig)
	if model.JoinVMMs(vmms, ",") != "firecracker" || !strings.Contains(strings.Join(notes, " "), "PVH") {
		t.Errorf("vmlinux without PVH: %v %v", vmms, notes)
	}
}

func TestEmbeddedCatalog(t *testing.T) {
	c := Embedded()
	if c.Version < 1 || c.Default().Name != "debian-cloud" || c.Default().Source.Package != "linux-image-cloud-amd64" {
		t.Fatalf("embedded catalog: %+v", c)
	}
	names := map[string]bool{}
	for _, e := range c.Entries() {
		names[e.Name] = true
	}
	if !names["firecracker-ci-6.1"] {
		t.Errorf("no firecracker entry in %v", names)
	}
	if _, err := c.Lookup("nope"); !errors.Is(err, ErrUnknownKernel) {
		t.Errorf("lookup of a missing kernel: %v", err)
	}
	for name, bad := range map[string]string{
		"no version":   `{"default":"a","kernels":[{"name":"a","source":{"kind":"debian","package":"p"}}]}`,
		"bad default":  `{"version":1,"default":"b","kernels":[{"name":"a","source":{"kind":"debian","package":"p"}}]}`,
		"bad name":     `{"version":1,"default":"../x","kernels":[{"name":"../x","source":{"kind":"debian","package":"p"}}]}`,
		"bad kind":     `{"version":1,"default":"a","kernels":[{"name":"a","source":{"kind":"ftp"}}]}`,
		"short sha":    `{"version":1,"default":"a","kernels":[{"name":"a","source":{"kind":"url","url":"http://x","sha256":"ab","size":3}}]}`,
		"unknown vmm":  `{"version":1,"default":"a","kernels":[{"name":"a","source":{"kind":"url","url":"http://x","vmms":["xen"]}}]}`,
		"listed twice": `{"version":1,"default":"a","kernels":[{"name":"a","source":{"kind":"debian","package":"p"}},{"name":"a","source":{"kind":"debian","package":"p"}}]}`,
	} {
		if _, err := ParseCatalog([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
