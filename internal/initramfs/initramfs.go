// Package initramfs builds the guest's initramfs: banger-vsock-agent as /init
// plus the kernel modules needed to reach the root disk, the config disk and
// the agent channel. Builds are reproducible and cached by content.
package initramfs

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// formatVersion is part of the cache key: bump it when the layout changes.
const formatVersion = "banger-initramfs-1"

// ModulesOrderPath is where the initramfs lists its modules in load order,
// one absolute path a line, dependencies first; guestinit reads it.
const ModulesOrderPath = "etc/banger/modules.order"

// DefaultModules reach virtio disks, network, console ports and vsock on
// both virtio-mmio (microvm, Firecracker) and virtio-pci. Built-in ones are
// skipped, so kernels with virtio built in get an (almost) empty list.
var DefaultModules = []string{
	"virtio_mmio", "virtio_pci", "virtio_blk", "virtio_net", "virtio_console",
	"vsock", "vmw_vsock_virtio_transport", "ext4", "crc32c_generic",
}

// OptionalModules join DefaultModules when the kernel has them: virtiofs
// (with fuse) mounts shared host directories (vm create --mount); a kernel
// without it still boots, and such a VM's mount fails in the guest.
var OptionalModules = []string{"virtiofs"}

// Compression of the cpio archive.
type Compression string

const (
	CompressionAuto Compression = ""     // zstd if the kernel config says CONFIG_RD_ZSTD=y, else gzip
	CompressionGzip Compression = "gzip" // every kernel understands it
	CompressionZstd Compression = "zstd"
)

// Inputs are everything a build depends on.
type Inputs struct {
	AgentPath     string   // static banger-vsock-agent (CGO_ENABLED=0), becomes /init
	ModulesDir    string   // the kernel's lib/modules/<release>
	KernelRelease string   // default: base name of ModulesDir
	KernelConfig  string   // default: <ModulesDir>/../../../boot/config-<release> when present
	Modules       []string // default: DefaultModules
	Compression   Compression
}

// Build writes the initramfs for in under cacheDir and returns its path; a
// previous build with the same content key is returned at once (cached true).
func Build(ctx context.Context, in Inputs, cacheDir string) (path string, cached bool, err error) {
	plan, err := planBuild(in)
	if err != nil {
		return "", false, err
	}
	if err := ctx.Err(); err != nil {
		return "", false, err
	}
	out := filepath.Join(cacheDir, "initramfs-"+plan.key[:32]+"."+string(plan.compression))
	if fi, err := os.Stat(out); err == nil && fi.Mode().IsRegular() {
		return out, true, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", false, fmt.Errorf("create initramfs cache %s: %w", cacheDir, err)
	}
	tmp, err := os.CreateTemp(cacheDir, ".initramfs-*")
	if err != nil {
		return "", false, fmt.Errorf("create initramfs in %s: %w", cacheDir, err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	if err := plan.write(ctx, tmp); err != nil {
		tmp.Close()
		return "", false, fmt.Errorf("build initramfs: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", false, fmt.Errorf("sync initramfs: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", false, fmt.Errorf("build initramfs: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", false, fmt.Errorf("build initramfs: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", false, fmt.Errorf("store initramfs %s: %w", out, err)
	}
	return out, false, nil
}

type plan struct {
	in          Inputs
	release     string
	compression Compression
	modules     []string          // load order
	modulePaths map[string]string // name → path relative to ModulesDir
	key         string
}

func planBuild(in Inputs) (*plan, error) {
	if in.AgentPath == "" || in.ModulesDir == "" {
		return nil, errors.New("initramfs inputs need an agent binary and a modules directory")
	}
	p := &plan{in: in, release: in.KernelRelease}
	if p.release == "" {
		p.release = filepath.Base(filepath.Clean(in.ModulesDir))
	}
	if strings.ContainsAny(p.release, "/\x00") || p.release == "." || p.release == ".." {
		return nil, fmt.Errorf("invalid kernel release %q", p.release)
	}
	if err := checkStaticELF(in.AgentPath); err != nil {
		return nil, err
	}
	comp, err := pickCompression(in, p.release)
	if err != nil {
		return nil, err
	}
	p.compression = comp

	idx, err := loadModuleIndex(in.ModulesDir)
	if err != nil {
		return nil, fmt.Errorf("index modules of %s: %w", p.release, err)
	}
	want := in.Modules
	if want == nil {
		want = append([]string(nil), DefaultModules...)
		for _, m := range OptionalModules {
			if _, ok := idx.paths[m]; ok || idx.builtin[m] {
				want = append(want, m)
			}
		}
	}
	p.modules, err = idx.resolve(want)
	if err != nil {
		return nil, fmt.Errorf("resolve initramfs modules: %w", err)
	}
	p.modulePaths = map[string]string{}
	for _, m := range p.modules {
		rel := filepath.ToSlash(idx.paths[m])
		if !filepath.IsLocal(rel) || !strings.HasSuffix(rel, ".ko") {
			return nil, fmt.Errorf("module %s has an unusable path %q (uncompressed .ko inside the modules directory required)", m, rel)
		}
		p.modulePaths[m] = rel
	}

	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00", formatVersion, p.release, p.compression)
	fmt.Fprintf(h, "modules=%s\x00", strings.Join(want, ","))
	if err := hashFile(h, in.AgentPath); err != nil {
		return nil, err
	}
	for _, m := range p.modules {
		fmt.Fprintf(h, "\x00%s\x00", p.modulePaths[m])
		if err := hashFile(h, filepath.Join(in.ModulesDir, p.modulePaths[m])); err != nil {
			return nil, err
		}
	}
	p.key = hex.EncodeToString(h.Sum(nil))
	return p, nil
}

// checkStaticELF refuses a dynamically linked /init: the initramfs has no
// loader or libc.
func checkStaticELF(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open agent binary: %w", err)
	}
	defer f.Close()
	ef, err := elf.NewFile(f)
	if err != nil {
		return fmt.Errorf("agent binary %s is not an ELF executable: %w", path, err)
	}
	for _, prog := range ef.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("agent binary %s is dynamically linked: build it with CGO_ENABLED=0", path)
		}
	}
	return nil
}

func pickCompression(in Inputs, release string) (Compression, error) {
	switch in.Compression {
	case CompressionGzip, CompressionZstd:
		return in.Compression, nil
	case CompressionAuto:
	default:
		return "", fmt.Errorf("unknown initramfs compression %q", in.Compression)
	}
	cfg := in.KernelConfig
	if cfg == "" {
		cfg = filepath.Join(in.ModulesDir, "..", "..", "..", "boot", "config-"+release)
	}
	data, err := os.ReadFile(cfg)
	if err != nil {
		if in.KernelConfig == "" && errors.Is(err, fs.ErrNotExist) {
			return CompressionGzip, nil
		}
		return "", fmt.Errorf("read kernel config: %w", err)
	}
	if bytes.Contains(data, []byte("\nCONFIG_RD_ZSTD=y\n")) {
		return CompressionZstd, nil
	}
	return CompressionGzip, nil
}

func hashFile(h io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("hash %s: %w", path, err)
	}
	defer f.Close()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("hash %s: %w", path, err)
	}
	return nil
}

// write streams the compressed archive: entries sorted by name (parents
// before children), all owned by root with mtime 0.
func (p *plan) write(ctx context.Context, w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	var zw io.WriteCloser
	switch p.compression {
	case CompressionZstd:
		enc, err := zstd.NewWriter(bw, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
		if err != nil {
			return fmt.Errorf("start zstd: %w", err)
		}
		zw = enc
	default:
		gw, err := gzip.NewWriterLevel(bw, gzip.DefaultCompression)
		if err != nil {
			return fmt.Errorf("start gzip: %w", err)
		}
		zw = gw // zero Header: no name, mtime 0
	}

	entries, err := p.entries()
	if err != nil {
		return err
	}
	arc := &newc{w: zw}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		arc.write(e)
	}
	if err := arc.trailer(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("finish %s stream: %w", p.compression, err)
	}
	return bw.Flush()
}

func (p *plan) entries() ([]cpioEntry, error) {
	dirs := map[string]bool{
		"dev": true, "proc": true, "sys": true, "run": true, "tmp": true, "newroot": true,
		"etc/banger": true, "lib/modules/" + p.release: true,
	}
	var files []cpioEntry
	addFile := func(name, src string, perm uint32) error {
		fi, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("pack %s: %w", name, err)
		}
		files = append(files, cpioEntry{name: name, mode: modeReg | perm, size: fi.Size(),
			writeContent: func(w io.Writer) (int64, error) { return copyFile(w, src) }})
		return nil
	}
	if err := addFile("init", p.in.AgentPath, 0o755); err != nil {
		return nil, err
	}
	var order strings.Builder
	for _, m := range p.modules {
		name := path.Join("lib/modules", p.release, p.modulePaths[m])
		if err := addFile(name, filepath.Join(p.in.ModulesDir, p.modulePaths[m]), 0o644); err != nil {
			return nil, err
		}
		order.WriteString("/" + name + "\n")
	}
	orderData := []byte(order.String())
	files = append(files, cpioEntry{name: ModulesOrderPath, mode: modeReg | 0o644, size: int64(len(orderData)),
		writeContent: func(w io.Writer) (int64, error) { n, err := w.Write(orderData); return int64(n), err }})
	// Without /dev/console the kernel starts init with no stdin/stdout/stderr.
	files = append(files, cpioEntry{name: "dev/console", mode: modeChar | 0o600, rdevMajor: 5, rdevMinor: 1})

	for _, f := range files {
		for d := path.Dir(f.name); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for d := range dirs {
		for d = path.Dir(d); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	all := files
	for d := range dirs {
		all = append(all, cpioEntry{name: d, mode: modeDir | 0o755, nlink: 2})
	}
	slices.SortFunc(all, func(a, b cpioEntry) int { return strings.Compare(a.name, b.name) })
	return all, nil
}

func copyFile(w io.Writer, path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return io.Copy(w, f)
}
