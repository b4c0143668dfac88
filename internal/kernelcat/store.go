package kernelcat

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bangerdev/banger/internal/debarchive"
	"github.com/bangerdev/banger/internal/download"
	"github.com/bangerdev/banger/internal/faultinject"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/progress"
)

// Kernel is one kernel in the store, as recorded in its kernel.json.
type Kernel struct {
	Name           string          `json:"name"`
	Release        string          `json:"release"`         // uname -r, e.g. 6.1.0-41-cloud-amd64
	Source         string          `json:"source"`          // debian:PKG=VERSION, a URL, or local:PATH
	SHA256         string          `json:"sha256"`          // of the file at Path
	Path           string          `json:"path"`            // the boot image: vmlinuz (bzImage) or vmlinux
	VMLinux        string          `json:"vmlinux"`         // uncompressed ELF, "" when not derivable
	Config         string          `json:"config"`          // kernel .config, "" when unknown
	ModulesDir     string          `json:"modules_dir"`     // the lib/modules/RELEASE tree, "" when none
	VMMs           []model.VMMKind `json:"vmms"`            // VMMs that can boot it
	Notes          []string        `json:"notes,omitempty"` // why a VMM cannot
	CatalogVersion int             `json:"catalog_version,omitempty"`
	CreatedAt      time.Time       `json:"created_at"`
}

// PackageSource is the part of debarchive.Archive the store uses: a seam
// for tests that need to tamper with what the archive says.
type PackageSource interface {
	ResolveImagePackage(ctx context.Context, name string, report progress.Func) (debarchive.Package, error)
	Fetch(ctx context.Context, p debarchive.Package, dst string, report progress.Func) error
}

// StoreConfig sets up a Store.
type StoreConfig struct {
	Dir     string        // the kernels dir: <Dir>/<name>/…
	Catalog *Catalog      // Embedded() when nil
	Archive PackageSource // needed for KindDebian entries
	Client  *http.Client  // for KindURL entries
	Logger  *slog.Logger
	Now     func() time.Time
}

// Store keeps pulled and imported kernels, one directory each. Every write
// goes to a staging directory that is renamed into place when complete, so
// a failed pull or import leaves nothing in the store.
type Store struct {
	cfg StoreConfig
	log *slog.Logger
	mu  sync.Mutex // serialises the rename dance that installs a kernel
}

// Layout of a kernel directory.
const (
	fileVMLinuz = "vmlinuz"
	fileVMLinux = "vmlinux"
	fileConfig  = "config"
	dirModules  = "modules"
	fileRecord  = "kernel.json"
)

// maxURLKernel caps a kernel fetched from a catalog URL.
const maxURLKernel = 256 << 20

// NewStore returns a Store for cfg.
func NewStore(cfg StoreConfig) (*Store, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("kernel store: no directory configured")
	}
	if cfg.Catalog == nil {
		cfg.Catalog = Embedded()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create kernel store: %w", err)
	}
	s := &Store{cfg: cfg, log: log}
	s.removeStale(24 * time.Hour)
	return s, nil
}

// Catalog returns the store's catalog.
func (s *Store) Catalog() *Catalog { return s.cfg.Catalog }

// Pull fetches the catalog kernel name into the store, replacing an older
// copy of it.
func (s *Store) Pull(ctx context.Context, name string, report progress.Func) (Kernel, error) {
	entry, err := s.cfg.Catalog.Lookup(name)
	if err != nil {
		return Kernel{}, err
	}
	return s.stage(ctx, name, func(stage string) (Kernel, error) {
		k := Kernel{Name: name, CatalogVersion: s.cfg.Catalog.Version}
		var err error
		switch entry.Source.Kind {
		case KindDebian:
			err = s.pullDebian(ctx, entry, stage, &k, report)
		case KindURL:
			err = s.pullURL(ctx, entry, stage, &k, report)
		default:
			err = fmt.Errorf("unknown source kind %q", entry.Source.Kind)
		}
		if err == nil {
			// A fault test stops here with the kernel staged, not installed.
			faultinject.Pause(ctx, faultinject.Point("kernel-pull", "staged"))
		}
		return k, err
	})
}

func (s *Store) pullDebian(ctx context.Context, e Entry, stage string, k *Kernel, report progress.Func) error {
	if s.cfg.Archive == nil {
		return fmt.Errorf("no Debian archive configured")
	}
	pkg, err := s.cfg.Archive.ResolveImagePackage(ctx, e.Source.Package, report)
	if err != nil {
		return err
	}
	report.Stage("kernel", fmt.Sprintf("%s %s from %s", pkg.Name, pkg.Version, pkg.Suite))
	deb := filepath.Join(stage, "package.deb")
	paused := false
	fetchReport := func(ev progress.Event) {
		report.Report(ev)
		if !paused && ev.Stage == "download" && ev.Done > 0 {
			// A fault test stops here with a partial package on disk.
			paused = true
			faultinject.Pause(ctx, faultinject.Point("kernel-pull", "fetch"))
		}
	}
	if err := s.cfg.Archive.Fetch(ctx, pkg, deb, fetchReport); err != nil {
		return err
	}
	root := filepath.Join(stage, "root")
	err = debarchive.ExtractDeb(deb, root, func(name string) bool {
		return strings.HasPrefix(name, "boot/vmlinuz-") || strings.HasPrefix(name, "boot/config-") ||
			strings.HasPrefix(name, "lib/modules/") || strings.HasPrefix(name, "usr/lib/modules/")
	})
	if err != nil {
		return err
	}
	os.Remove(deb)
	vmlinuzes, _ := filepath.Glob(filepath.Join(root, "boot/vmlinuz-*"))
	if len(vmlinuzes) != 1 {
		return fmt.Errorf("package %s holds %d boot/vmlinuz-* files, want 1", pkg.Name, len(vmlinuzes))
	}
	release := strings.TrimPrefix(filepath.Base(vmlinuzes[0]), "vmlinuz-")
	if err := ValidRelease(release); err != nil {
		return err
	}
	if err := os.Rename(vmlinuzes[0], filepath.Join(stage, fileVMLinuz)); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(root, "boot", "config-"+release), filepath.Join(stage, fileConfig)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, dir := range []string{"lib/modules", "usr/lib/modules"} { // before and after merged /usr
		mods := filepath.Join(root, dir, release)
		if !exists(mods) {
			continue
		}
		if err := os.Rename(mods, filepath.Join(stage, dirModules)); err != nil {
			return err
		}
		if err := dropEscapingLinks(filepath.Join(stage, dirModules)); err != nil {
			return err
		}
		break
	}
	if err := os.RemoveAll(root); err != nil {
		return err
	}
	k.Source = fmt.Sprintf("debian:%s=%s", pkg.Name, pkg.Version)
	return s.finish(stage, k, release, nil)
}

func (s *Store) pullURL(ctx context.Context, e Entry, stage string, k *Kernel, report progress.Func) error {
	src := e.Source
	if src.SHA256 == "" || src.Size <= 0 {
		return fmt.Errorf("%s: %w", src.URL, ErrUnpinned)
	}
	dl := filepath.Join(stage, "download")
	spec := download.Spec{URL: src.URL, SHA256: src.SHA256, Size: src.Size, MaxBytes: maxURLKernel, Label: e.Name}
	if err := download.FetchVerified(ctx, s.cfg.Client, spec, dl, report); err != nil {
		return err
	}
	k.Source = src.URL
	return s.placeImage(stage, dl, k, src.VMMs)
}

// Import adds a local kernel (a bzImage or an ELF vmlinux) under name, with
// an optional modules tree copied in, replacing an older kernel of that name.
// A config-RELEASE file next to the image is taken along (Debian's /boot
// layout).
func (s *Store) Import(ctx context.Context, name, path, modulesDir string) (Kernel, error) {
	if err := ValidName(name); err != nil {
		return Kernel{}, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return Kernel{}, err
	}
	return s.stage(ctx, name, func(stage string) (Kernel, error) {
		k := Kernel{Name: name, Source: "local:" + abs}
		tmp := filepath.Join(stage, "import")
		if err := copyFile(abs, tmp, 0o644); err != nil {
			return k, err
		}
		if modulesDir != "" {
			if err := copyTree(ctx, modulesDir, filepath.Join(stage, dirModules)); err != nil {
				return k, fmt.Errorf("copy modules %s: %w", modulesDir, err)
			}
		}
		return k, s.placeImage(stage, tmp, &k, nil)
	})
}

// placeImage moves a downloaded or imported image to vmlinuz or vmlinux by
// its format, looks for a config beside the source, and finishes the record.
func (s *Store) placeImage(stage, file string, k *Kernel, declared []model.VMMKind) error {
	data, err := readKernelFile(file)
	if err != nil {
		return err
	}
	release := ""
	if bz, err := parseBzImage(data); err == nil {
		release = bz.Release
		if err := os.Rename(file, filepath.Join(stage, fileVMLinuz)); err != nil {
			return err
		}
	} else if _, err := checkELF(data); err == nil {
		release = elfRelease(data)
		if err := os.Rename(file, filepath.Join(stage, fileVMLinux)); err != nil {
			return err
		}
	} else {
		return err
	}
	if strings.HasPrefix(k.Source, "local:") && release != "" {
		cfg := filepath.Join(filepath.Dir(strings.TrimPrefix(k.Source, "local:")), "config-"+release)
		if err := copyFile(cfg, filepath.Join(stage, fileConfig), 0o644); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if release != "" {
		if err := ValidRelease(release); err != nil {
			return err
		}
	}
	return s.finish(stage, k, release, declared)
}

// ValidRelease refuses releases that could not be a directory name.
func ValidRelease(r string) error {
	if r == "" || r == "." || r == ".." || strings.ContainsAny(r, "/\\\x00 ") || len(r) > 128 {
		return fmt.Errorf("kernel release %q is not a valid name", r)
	}
	return nil
}

// finish derives the vmlinux, builds the module index, decides the VMMs and
// writes kernel.json, all inside the staging dir.
func (s *Store) finish(stage string, k *Kernel, release string, declared []model.VMMKind) error {
	k.Release = release
	bzPath := filepath.Join(stage, fileVMLinuz)
	hasBz := exists(bzPath)
	var notes []string
	if hasBz {
		bz, err := readKernelFile(bzPath)
		if err != nil {
			return err
		}
		if raw, err := ExtractVMLinux(bz); err != nil {
			notes = append(notes, "no vmlinux derived from the bzImage: "+err.Error())
		} else if err := os.WriteFile(filepath.Join(stage, fileVMLinux), raw, 0o644); err != nil {
			return err
		}
	}
	vmlinux := filepath.Join(stage, fileVMLinux)
	hasVMLinux := exists(vmlinux)
	pvh := false
	if hasVMLinux {
		data, err := readKernelFile(vmlinux)
		if err != nil {
			return err
		}
		info, err := checkELF(data)
		if err != nil {
			return err
		}
		pvh = info.PVH
	}
	var config []byte
	if data, err := os.ReadFile(filepath.Join(stage, fileConfig)); err == nil {
		config = data
	}
	vmms, why := vmmSupport(hasBz, hasVMLinux, pvh, config)
	if config == nil && len(declared) > 0 {
		// A bare vmlinux from a pinned catalog URL: trust the catalog,
		// within what the image format allows.
		vmms = nil
		for _, v := range declared {
			if v == model.VMMFirecracker && !hasVMLinux {
				continue
			}
			vmms = append(vmms, v)
		}
		why = []string{"vmms as declared by the catalog (no kernel config shipped)"}
	}
	k.VMMs, k.Notes = vmms, append(notes, why...)
	if exists(filepath.Join(stage, dirModules)) {
		if err := writeModuleIndex(filepath.Join(stage, dirModules)); err != nil {
			return fmt.Errorf("index modules: %w", err)
		}
	}
	boot := fileVMLinuz
	if !hasBz {
		boot = fileVMLinux
	}
	sum, err := fileSHA256(filepath.Join(stage, boot))
	if err != nil {
		return err
	}
	k.SHA256 = sum
	k.CreatedAt = s.cfg.Now().UTC()
	// Paths are recorded relative here and made absolute on read, so the
	// record stays right after the staging dir is renamed.
	k.Path = boot
	if hasVMLinux {
		k.VMLinux = fileVMLinux
	}
	if config != nil {
		k.Config = fileConfig
	}
	if exists(filepath.Join(stage, dirModules)) {
		k.ModulesDir = dirModules
	}
	data, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(stage, fileRecord), append(data, '\n'), 0o644)
}

// stage runs build in a fresh staging dir inside the store and renames the
// result to <Dir>/<name>, replacing an older copy only once the new one is
// complete. On failure the staging dir is removed.
func (s *Store) stage(ctx context.Context, name string, build func(stage string) (Kernel, error)) (k Kernel, err error) {
	if err := ValidName(name); err != nil {
		return Kernel{}, err
	}
	stage, err := os.MkdirTemp(s.cfg.Dir, ".staging-"+name+"-")
	if err != nil {
		return Kernel{}, fmt.Errorf("create staging dir for kernel %q: %w", name, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(stage)
		}
	}()
	if _, err := build(stage); err != nil {
		return Kernel{}, fmt.Errorf("pull kernel %q: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dst := filepath.Join(s.cfg.Dir, name)
	var old string
	if exists(dst) {
		old = stage + ".old"
		if err := os.Rename(dst, old); err != nil {
			return Kernel{}, fmt.Errorf("move aside kernel %q: %w", name, err)
		}
	}
	if err := os.Rename(stage, dst); err != nil {
		if old != "" {
			os.Rename(old, dst)
		}
		return Kernel{}, fmt.Errorf("install kernel %q: %w", name, err)
	}
	if old != "" {
		os.RemoveAll(old)
	}
	s.log.InfoContext(ctx, "kernel stored", "kernel", name)
	return s.Get(name)
}

// removeStale deletes staging dirs a crashed process left, once they are
// older than any pull could still be running.
func (s *Store) removeStale(age time.Duration) {
	ents, _ := os.ReadDir(s.cfg.Dir)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".staging-") && !strings.HasPrefix(e.Name(), ".removing-") {
			continue
		}
		if info, err := e.Info(); err == nil && s.cfg.Now().Sub(info.ModTime()) > age {
			s.log.Info("removing stale kernel staging dir", "dir", e.Name())
			os.RemoveAll(filepath.Join(s.cfg.Dir, e.Name()))
		}
	}
}

// Get returns the stored kernel name.
func (s *Store) Get(name string) (Kernel, error) {
	if err := ValidName(name); err != nil {
		return Kernel{}, err
	}
	dir := filepath.Join(s.cfg.Dir, name)
	data, err := os.ReadFile(filepath.Join(dir, fileRecord))
	if errors.Is(err, fs.ErrNotExist) {
		return Kernel{}, fmt.Errorf("kernel %q: %w in the store", name, ErrUnknownKernel)
	}
	if err != nil {
		return Kernel{}, err
	}
	var k Kernel
	if err := json.Unmarshal(data, &k); err != nil {
		return Kernel{}, fmt.Errorf("read kernel %q record: %w", name, err)
	}
	for _, p := range []*string{&k.Path, &k.VMLinux, &k.Config, &k.ModulesDir} {
		if *p != "" {
			if !filepath.IsLocal(*p) {
				return Kernel{}, fmt.Errorf("kernel %q record names a path outside its dir: %q", name, *p)
			}
			*p = filepath.Join(dir, *p)
		}
	}
	return k, nil
}

// List returns every stored kernel, sorted by name.
func (s *Store) List() ([]Kernel, error) {
	ents, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("list kernels: %w", err)
	}
	var out []Kernel
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		k, err := s.Get(e.Name())
		if err != nil {
			continue // a foreign or damaged dir is not a kernel
		}
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Remove deletes a stored kernel.
func (s *Store) Remove(name string) error {
	if _, err := s.Get(name); err != nil {
		return err
	}
	// Rename first so a half-removed kernel is never seen as stored.
	gone, err := os.MkdirTemp(s.cfg.Dir, ".removing-"+name+"-")
	if err != nil {
		return fmt.Errorf("remove kernel %q: %w", name, err)
	}
	target := filepath.Join(gone, name)
	if err := os.Rename(filepath.Join(s.cfg.Dir, name), target); err != nil {
		os.RemoveAll(gone)
		return fmt.Errorf("remove kernel %q: %w", name, err)
	}
	return os.RemoveAll(gone)
}

// dropEscapingLinks removes symlinks that point outside dir (the build and
// source links to /usr/src), so nothing reading the tree follows them out.
func dropEscapingLinks(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink == 0 {
			return err
		}
		link, err := os.Readlink(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if filepath.IsAbs(link) || !filepath.IsLocal(filepath.Join(filepath.Dir(rel), link)) {
			return os.Remove(p)
		}
		return nil
	})
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// copyTree copies a modules tree: directories, regular files and symlinks
// whose targets stay inside the tree (dangling build/source links to
// /usr/src are dropped).
func copyTree(ctx context.Context, src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if filepath.IsAbs(link) || !filepath.IsLocal(filepath.Join(filepath.Dir(rel), link)) {
				return nil
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			return copyFile(p, target, 0o644)
		}
		return nil
	})
}
