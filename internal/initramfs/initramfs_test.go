package initramfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"
	"github.com/klauspost/compress/zstd"

	"github.com/bangerdev/banger/internal/testutil"
)

var (
	agentOnce sync.Once
	agentPath string
	agentErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if agentPath != "" {
		os.RemoveAll(filepath.Dir(agentPath))
	}
	os.Exit(code)
}

// realAgent builds cmd/banger-vsock-agent (static) once per test binary: the
// builds and benchmarks pack the real /init.
func realAgent(tb testing.TB) string {
	tb.Helper()
	agentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "banger-initramfs-agent-")
		if err != nil {
			agentErr = err
			return
		}
		agentPath = filepath.Join(dir, "banger-vsock-agent")
		cmd := exec.Command("go", "build", "-trimpath", "-o", agentPath, "github.com/bangerdev/banger/cmd/banger-vsock-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			agentErr = fmt.Errorf("go build agent: %v\n%s", err, out)
		}
	})
	if agentErr != nil {
		tb.Fatal(agentErr)
	}
	return agentPath
}

type entry struct {
	mode  cpio.FileMode
	data  []byte
	inode int64
}

// unpack decompresses and reads the archive with an independent reader.
func unpack(t *testing.T, p string) map[string]entry {
	t.Helper()
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var r io.Reader
	switch {
	case bytes.HasPrefix(raw, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		r = d
	case bytes.HasPrefix(raw, []byte{0x1f, 0x8b}):
		g, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		if !g.ModTime.IsZero() || g.Name != "" {
			t.Errorf("gzip header carries mtime %v / name %q", g.ModTime, g.Name)
		}
		r = g
	default:
		t.Fatalf("unknown compression, magic %x", raw[:4])
	}
	cr := cpio.NewReader(r)
	out := map[string]entry{}
	for {
		h, err := cr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Guid != 0 || h.ModTime.Unix() != 0 {
			t.Errorf("%s: uid %d gid %d mtime %v, want 0 0 0", h.Name, h.Uid, h.Guid, h.ModTime)
		}
		data, err := io.ReadAll(cr)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := out[h.Name]; dup {
			t.Errorf("duplicate entry %s", h.Name)
		}
		out[h.Name] = entry{mode: h.Mode, data: data, inode: h.Inode}
	}
	return out
}

// expectedModules computes the closure of names from modules.dep when it
// exists, else by scanning each .ko's bytes for "depends=": a second,
// independent reading of the dependency data.
func expectedModules(t *testing.T, dir string, names []string) map[string]string {
	t.Helper()
	paths := map[string]string{}
	deps := map[string][]string{}
	norm := func(s string) string {
		s = strings.TrimSuffix(path.Base(s), ".ko")
		return strings.ReplaceAll(s, "-", "_")
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.dep")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			mod, rest, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			paths[norm(mod)] = mod
			for _, d := range strings.Fields(rest) {
				deps[norm(mod)] = append(deps[norm(mod)], norm(d))
			}
		}
	} else {
		b, err := os.ReadFile(filepath.Join(dir, "modules.order"))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Fields(string(b)) {
			paths[norm(line)] = line
		}
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, line := range strings.Fields(string(b)) {
			builtin[norm(line)] = true
		}
	}
	want := map[string]string{}
	var visit func(string)
	visit = func(n string) {
		if _, done := want[n]; done || builtin[n] {
			return
		}
		p, ok := paths[n]
		if !ok {
			t.Fatalf("test kernel lacks module %s", n)
		}
		want[n] = p
		d, ok := deps[n]
		if !ok {
			ko, err := os.ReadFile(filepath.Join(dir, p))
			if err != nil {
				t.Fatal(err)
			}
			if i := bytes.Index(ko, []byte("\x00depends=")); i >= 0 {
				v := ko[i+len("\x00depends="):]
				v = v[:bytes.IndexByte(v, 0)]
				for _, x := range strings.Split(string(v), ",") {
					if x != "" {
						d = append(d, norm(x))
					}
				}
			}
		}
		for _, x := range d {
			visit(x)
		}
	}
	for _, n := range names {
		visit(n)
	}
	return want
}

func TestBuildContentsAndReproducible(t *testing.T) {
	_, modules := testutil.Kernel(t)
	agent := realAgent(t)
	release := filepath.Base(modules)
	in := Inputs{AgentPath: agent, ModulesDir: modules}

	p1, cached, err := Build(context.Background(), in, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if cached {
		t.Fatal("first build in an empty cache reported cached")
	}
	p2, _, err := Build(context.Background(), in, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := os.ReadFile(p1)
	b2, _ := os.ReadFile(p2)
	if !bytes.Equal(b1, b2) {
		t.Fatalf("two builds differ (%d vs %d bytes)", len(b1), len(b2))
	}

	files := unpack(t, p1)
	agentBytes, _ := os.ReadFile(agent)
	init, ok := files["init"]
	if !ok || !bytes.Equal(init.data, agentBytes) || init.mode.Perm() != 0o755 || !init.mode.IsRegular() {
		t.Fatalf("/init missing or not the agent binary with mode 0755 (mode %v)", init.mode)
	}
	if c, ok := files["dev/console"]; !ok || c.mode&cpio.ModeType != cpio.TypeChar {
		t.Fatal("dev/console char device missing")
	}
	for _, d := range []string{"dev", "proc", "sys", "newroot", "run", "lib/modules/" + release} {
		if e, ok := files[d]; !ok || !e.mode.IsDir() {
			t.Errorf("directory %s missing", d)
		}
	}
	inodes := map[int64]string{}
	for name, e := range files {
		if other, dup := inodes[e.inode]; dup {
			t.Errorf("%s and %s share inode %d", name, other, e.inode)
		}
		inodes[e.inode] = name
	}

	// The test kernel (Debian's cloud kernel) has virtiofs: the optional
	// module and its fuse dependency must be in.
	want := expectedModules(t, modules, append(append([]string(nil), DefaultModules...), OptionalModules...))
	if len(want) < 8 {
		t.Fatalf("dependency closure of the default modules has only %d modules: test kernel unexpected", len(want))
	}
	order := strings.Fields(string(files[ModulesOrderPath].data))
	if len(order) != len(want) {
		t.Errorf("modules.order lists %d modules, want %d: %v", len(order), len(want), order)
	}
	position := map[string]int{}
	for i, p := range order {
		position[strings.TrimSuffix(path.Base(p), ".ko")] = i
		e, ok := files[strings.TrimPrefix(p, "/")]
		if !ok {
			t.Errorf("modules.order names %s, not in the archive", p)
			continue
		}
		disk, _ := os.ReadFile(filepath.Join(modules, strings.TrimPrefix(p, "/lib/modules/"+release+"/")))
		if !bytes.Equal(e.data, disk) {
			t.Errorf("%s differs from the kernel's module", p)
		}
	}
	for name, rel := range want {
		if _, ok := files[path.Join("lib/modules", release, rel)]; !ok {
			t.Errorf("module %s (%s) missing from the archive", name, rel)
		}
	}
	// Dependencies load first: virtio before virtio_mmio, failover before net_failover.
	for _, pair := range [][2]string{{"virtio", "virtio_mmio"}, {"virtio_ring", "virtio_blk"}, {"vsock", "vmw_vsock_virtio_transport"}} {
		a, aok := position[pair[0]]
		b, bok := position[pair[1]]
		if aok && bok && a > b {
			t.Errorf("%s loads after %s, which depends on it", pair[0], pair[1])
		}
	}
}

func TestBuildCacheHit(t *testing.T) {
	_, modules := testutil.Kernel(t)
	in := Inputs{AgentPath: realAgent(t), ModulesDir: modules}
	cache := t.TempDir()
	p1, cached, err := Build(context.Background(), in, cache)
	if err != nil || cached {
		t.Fatalf("first build: cached=%v err=%v", cached, err)
	}
	fi1, _ := os.Stat(p1)
	start := time.Now()
	p2, cached, err := Build(context.Background(), in, cache)
	if err != nil {
		t.Fatal(err)
	}
	if !cached || p2 != p1 {
		t.Fatalf("second build: cached=%v path %s (first %s)", cached, p2, p1)
	}
	fi2, _ := os.Stat(p2)
	if !os.SameFile(fi1, fi2) {
		t.Fatal("cache hit rewrote the file")
	}
	t.Logf("cache hit in %s", time.Since(start))

	// A different agent binary is a different key.
	other := filepath.Join(t.TempDir(), "agent")
	b, _ := os.ReadFile(in.AgentPath)
	if err := os.WriteFile(other, append(b, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	in.AgentPath = other
	p3, cached, err := Build(context.Background(), in, cache)
	if err != nil {
		t.Fatal(err)
	}
	if cached || p3 == p1 {
		t.Fatalf("changed agent hit the cache (cached=%v, %s)", cached, p3)
	}
	// And the module list is part of the key.
	in.Modules = []string{"virtio_blk"}
	p4, cached, err := Build(context.Background(), in, cache)
	if err != nil || cached || p4 == p3 {
		t.Fatalf("changed module list: cached=%v path=%s err=%v", cached, p4, err)
	}
}

func TestBuildMissingModule(t *testing.T) {
	_, modules := testutil.Kernel(t)
	_, _, err := Build(context.Background(), Inputs{
		AgentPath: realAgent(t), ModulesDir: modules,
		Modules: []string{"virtio_blk", "no_such_module_xyz"},
	}, t.TempDir())
	if !errors.Is(err, ErrModuleNotFound) || !strings.Contains(err.Error(), "no_such_module_xyz") {
		t.Fatalf("Build = %v, want ErrModuleNotFound naming the module", err)
	}
}

func TestBuildRejectsDynamicAgent(t *testing.T) {
	_, modules := testutil.Kernel(t)
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	sh, _ = filepath.EvalSymlinks(sh)
	_, _, err = Build(context.Background(), Inputs{AgentPath: sh, ModulesDir: modules}, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Fatalf("Build with %s = %v, want a dynamically-linked error", sh, err)
	}
}

func TestCompressionFromKernelConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	for content, want := range map[string]Compression{
		"CONFIG_RD_GZIP=y\nCONFIG_RD_ZSTD=y\n":            CompressionZstd,
		"CONFIG_RD_GZIP=y\n# CONFIG_RD_ZSTD is not set\n": CompressionGzip,
	} {
		if err := os.WriteFile(cfg, []byte("#\n"+content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := pickCompression(Inputs{KernelConfig: cfg}, "r")
		if err != nil || got != want {
			t.Errorf("config %q: got %q, %v; want %q", content, got, err, want)
		}
	}
	if got, err := pickCompression(Inputs{ModulesDir: filepath.Join(dir, "lib/modules/r")}, "r"); err != nil || got != CompressionGzip {
		t.Errorf("no config: got %q, %v; want gzip", got, err)
	}
}

func BenchmarkBuild(b *testing.B) {
	_, modules := testutil.Kernel(b)
	in := Inputs{AgentPath: realAgent(b), ModulesDir: modules}
	for b.Loop() {
		if _, cached, err := Build(context.Background(), in, b.TempDir()); err != nil || cached {
			b.Fatalf("cached=%v err=%v", cached, err)
		}
	}
}

func BenchmarkBuildCached(b *testing.B) {
	_, modules := testutil.Kernel(b)
	in := Inputs{AgentPath: realAgent(b), ModulesDir: modules}
	cache := b.TempDir()
	if _, _, err := Build(context.Background(), in, cache); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, cached, err := Build(context.Background(), in, cache); err != nil || !cached {
			b.Fatalf("cached=%v err=%v", cached, err)
		}
	}
}
