package debarchive

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ulikunitz/xz"

	"github.com/bangerdev/banger/internal/download"
	"github.com/bangerdev/banger/internal/progress"
)

// Caps on what the archive may send us.
const (
	maxInRelease   = 32 << 20
	maxIndex       = 512 << 20 // compressed or plain Packages file
	maxDeb         = 2 << 30
	resolveDepthMx = 4
)

// Package is one binary package as listed in a Packages index.
type Package struct {
	Name         string `json:"name"`
	Version      string `json:"version"`
	Architecture string `json:"architecture"`
	Depends      string `json:"depends,omitempty"`
	Filename     string `json:"filename"` // relative to URI
	Size         int64  `json:"size"`
	SHA256       string `json:"sha256"`
	URI          string `json:"uri"`   // archive base the Filename is relative to
	Suite        string `json:"suite"` // suite the package was found in
}

// URL is where the .deb is downloaded from.
func (p Package) URL() string { return p.URI + "/" + p.Filename }

// Config sets up an Archive.
type Config struct {
	Sources  []Source     // usually ReadHostSources("/"), possibly WithMirror
	Root     string       // where Signed-By keyring paths are resolved; "/" by default
	CacheDir string       // Packages indices are kept here, keyed by hash
	Arch     string       // "amd64" by default
	Client   *http.Client // http.DefaultClient when nil
	Logger   *slog.Logger
	Now      func() time.Time // clock for Valid-Until; time.Now by default
}

// Archive resolves packages across every suite of its sources. It keeps the
// parsed indices it loaded in memory (tens of MB for Debian's main), so a
// long-lived process should make one per pull and drop it afterwards.
type Archive struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	indices map[string]map[string][]Package // by index sha256: name → versions
}

// New returns an Archive for cfg.
func New(cfg Config) (*Archive, error) {
	if len(cfg.Sources) == 0 {
		return nil, fmt.Errorf("debian archive: no apt sources configured")
	}
	if cfg.CacheDir == "" {
		return nil, fmt.Errorf("debian archive: no cache dir configured")
	}
	if cfg.Root == "" {
		cfg.Root = "/"
	}
	if cfg.Arch == "" {
		cfg.Arch = "amd64"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Archive{cfg: cfg, log: log, indices: map[string]map[string][]Package{}}, nil
}

// Resolve returns the highest version of pkg across every listed suite.
func (a *Archive) Resolve(ctx context.Context, name string, report progress.Func) (Package, error) {
	return a.resolve(ctx, Relation{Name: name}, report)
}

func (a *Archive) resolve(ctx context.Context, rel Relation, report progress.Func) (Package, error) {
	var (
		best  Package
		found bool
		errs  []error
	)
	for _, src := range a.cfg.Sources {
		if len(src.Architectures) > 0 && !slices.Contains(src.Architectures, a.cfg.Arch) {
			continue
		}
		for _, suite := range src.Suites {
			for _, comp := range src.Components {
				idx, err := a.index(ctx, src, suite, comp, report)
				if err != nil {
					// One unreachable suite must not hide a signature or
					// hash failure, but must not stop the others either.
					errs = append(errs, err)
					continue
				}
				for _, p := range idx[rel.Name] {
					if !rel.Satisfied(p.Version) {
						continue
					}
					if !found || CompareVersions(p.Version, best.Version) > 0 {
						best, found = p, true
					}
				}
			}
		}
	}
	if len(errs) > 0 {
		// Apt refuses to go on with a suite it cannot verify: so do we,
		// or a stale suite could hide a security update.
		return Package{}, errors.Join(errs...)
	}
	if !found {
		return Package{}, fmt.Errorf("resolve %s: %w", relString(rel), ErrNotFound)
	}
	a.log.DebugContext(ctx, "resolved package", "package", best.Name, "version", best.Version, "suite", best.Suite)
	return best, nil
}

// kernelImage matches a real kernel image package (linux-image-6.1.0-41-cloud-amd64),
// as opposed to a metapackage that depends on one.
var kernelImage = regexp.MustCompile(`^linux-image-[0-9]`)

// ResolveImagePackage resolves a kernel image package, following a
// metapackage's (linux-image-cloud-amd64) first Depends alternative to the
// versioned package that holds the kernel.
func (a *Archive) ResolveImagePackage(ctx context.Context, name string, report progress.Func) (Package, error) {
	rel := Relation{Name: name}
	for range resolveDepthMx {
		p, err := a.resolve(ctx, rel, report)
		if err != nil {
			return Package{}, err
		}
		if kernelImage.MatchString(p.Name) {
			return p, nil
		}
		deps, err := ParseDepends(p.Depends)
		if err != nil {
			return Package{}, fmt.Errorf("parse depends of %s: %w", p.Name, err)
		}
		next := Relation{}
		for _, clause := range deps {
			if strings.HasPrefix(clause[0].Name, "linux-image-") {
				next = clause[0]
				break
			}
		}
		if next.Name == "" {
			return Package{}, fmt.Errorf("resolve kernel image %s: %s depends on no linux-image package: %w", name, p.Name, ErrNotFound)
		}
		rel = next
	}
	return Package{}, fmt.Errorf("resolve kernel image %s: metapackage chain longer than %d", name, resolveDepthMx)
}

// Fetch downloads p's .deb to dst, verified against the index's size and
// SHA-256.
func (a *Archive) Fetch(ctx context.Context, p Package, dst string, report progress.Func) error {
	if err := safeArchivePath(p.Filename); err != nil {
		return fmt.Errorf("fetch %s: %w", p.Name, err)
	}
	spec := download.Spec{URL: p.URL(), SHA256: p.SHA256, Size: p.Size, MaxBytes: maxDeb, Label: path.Base(p.Filename)}
	if err := download.FetchVerified(ctx, a.cfg.Client, spec, dst, report); err != nil {
		return fmt.Errorf("fetch package %s %s: %w", p.Name, p.Version, err)
	}
	return nil
}

// index returns one suite/component's Packages index (name → versions),
// from memory, the cache dir or the archive, always checked against the
// suite's freshly verified InRelease.
func (a *Archive) index(ctx context.Context, src Source, suite, comp string, report progress.Func) (map[string][]Package, error) {
	where := src.URI + " " + suite
	if strings.HasSuffix(suite, "/") || strings.Contains(suite, "..") {
		return nil, fmt.Errorf("load %s: flat or odd suite names are not supported", where)
	}
	keyring, err := loadKeyring(a.cfg.Root, src.SignedBy)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", where, err)
	}
	report.Stage("index", "fetch "+where+" InRelease")
	data, err := download.GetBounded(ctx, a.cfg.Client, src.URI+"/dists/"+suite+"/InRelease", maxInRelease)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", where, err)
	}
	rel, err := verifyInRelease(data, keyring, a.cfg.Now())
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", where, err)
	}
	base := comp + "/binary-" + a.cfg.Arch + "/Packages"
	plain, ok := rel.Files[base]
	if !ok {
		return nil, fmt.Errorf("load %s: %s: %w", where, base, ErrNoIndex)
	}

	a.mu.Lock()
	idx, ok := a.indices[plain.SHA256]
	a.mu.Unlock()
	if ok {
		return idx, nil
	}
	// The cache holds the uncompressed index named by its hash from
	// InRelease; it is re-hashed before every use.
	cached := filepath.Join(a.cfg.CacheDir, "indices", plain.SHA256+".Packages")
	if err := verifyFile(cached, plain); err != nil {
		if err := a.fetchIndex(ctx, src, suite, rel, base, plain, cached, report); err != nil {
			return nil, fmt.Errorf("load %s: %w", where, err)
		}
	}
	f, err := os.Open(cached)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", where, err)
	}
	defer f.Close()
	idx, err = parsePackages(f, src.URI, suite)
	if err != nil {
		return nil, fmt.Errorf("load %s: parse %s: %w", where, base, err)
	}
	a.mu.Lock()
	a.indices[plain.SHA256] = idx
	a.mu.Unlock()
	return idx, nil
}

// fetchIndex downloads the best compressed form of the index, verifies it,
// and writes the uncompressed index to cached once that too verifies.
func (a *Archive) fetchIndex(ctx context.Context, src Source, suite string, rel *release, base string, plain indexFile, cached string, report progress.Func) error {
	if err := os.MkdirAll(filepath.Dir(cached), 0o755); err != nil {
		return fmt.Errorf("create index cache: %w", err)
	}
	for _, ext := range []string{".xz", ".gz", ""} {
		f, ok := rel.Files[base+ext]
		if !ok {
			continue
		}
		tmpDir, err := os.MkdirTemp(filepath.Dir(cached), ".fetch-*")
		if err != nil {
			return fmt.Errorf("create index staging dir: %w", err)
		}
		defer os.RemoveAll(tmpDir)
		comp := filepath.Join(tmpDir, "Packages"+ext)
		spec := download.Spec{
			URL: src.URI + "/dists/" + suite + "/" + base + ext, SHA256: f.SHA256, Size: f.Size,
			MaxBytes: maxIndex, Label: suite + "/" + base + ext,
		}
		if err := download.FetchVerified(ctx, a.cfg.Client, spec, comp, report); err != nil {
			return err
		}
		unpacked := filepath.Join(tmpDir, "Packages")
		if ext != "" {
			if err := decompressFile(comp, unpacked, ext, plain.Size); err != nil {
				return fmt.Errorf("decompress %s: %w", spec.Label, err)
			}
		}
		if err := verifyFile(unpacked, plain); err != nil {
			return fmt.Errorf("decompressed %s: %w", spec.Label, err)
		}
		return os.Rename(unpacked, cached)
	}
	return fmt.Errorf("%s: %w", base, ErrNoIndex)
}

func decompressFile(src, dst, ext string, size int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	var r io.Reader
	switch ext {
	case ".xz":
		r, err = xz.NewReader(bufio.NewReader(in))
	case ".gz":
		var gz *gzip.Reader
		gz, err = gzip.NewReader(in)
		if err == nil {
			defer gz.Close()
			r = gz
		}
	default:
		err = fmt.Errorf("unsupported compression %s", ext)
	}
	if err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	// The uncompressed size is known from InRelease: read one byte more so
	// a longer stream shows up in the hash check instead of filling the disk.
	if _, err := io.Copy(out, io.LimitReader(r, size+1)); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// verifyFile checks a file's size and SHA-256 against an InRelease entry.
func verifyFile(p string, want indexFile) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if n != want.Size {
		return fmt.Errorf("size %d, expected %d: %w", n, want.Size, download.ErrHashMismatch)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.SHA256 {
		return fmt.Errorf("sha256 %s, expected %s: %w", got, want.SHA256, download.ErrHashMismatch)
	}
	return nil
}

// parsePackages reads a Packages index, keeping what resolution needs.
func parsePackages(r io.Reader, uri, suite string) (map[string][]Package, error) {
	idx := map[string][]Package{}
	err := eachStanza(r, false, func(st stanza) error {
		name := st["Package"]
		if name == "" {
			return nil
		}
		size, _ := strconv.ParseInt(st["Size"], 10, 64)
		idx[name] = append(idx[name], Package{
			Name: name, Version: st["Version"], Architecture: st["Architecture"],
			Depends: joinDepends(st["Pre-Depends"], st["Depends"]), Filename: st["Filename"],
			Size: size, SHA256: strings.ToLower(st["SHA256"]), URI: uri, Suite: suite,
		})
		return nil
	})
	return idx, err
}

func joinDepends(pre, dep string) string {
	pre, dep = strings.ReplaceAll(pre, "\n", " "), strings.ReplaceAll(dep, "\n", " ")
	switch {
	case pre == "":
		return dep
	case dep == "":
		return pre
	}
	return pre + ", " + dep
}

// safeArchivePath refuses index Filenames that could leave the archive.
func safeArchivePath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "\\") || strings.Contains(p, "?") || strings.Contains(p, "#") {
		return fmt.Errorf("filename %q: %w", p, ErrUnsafePath)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." || part == "." || part == "" {
			return fmt.Errorf("filename %q: %w", p, ErrUnsafePath)
		}
	}
	return nil
}

func relString(r Relation) string {
	if r.Op == "" {
		return r.Name
	}
	return fmt.Sprintf("%s (%s %s)", r.Name, r.Op, r.Version)
}
