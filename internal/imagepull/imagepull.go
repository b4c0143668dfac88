// Package imagepull turns an OCI/Docker image in a registry into an ext4
// root filesystem: resolve the reference (and the platform, for an index),
// fetch each layer blob once into a digest-addressed cache, flatten the
// layers safely (internal/flatten) and build the image (internal/ext4).
package imagepull

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/bangerdev/banger/internal/download"
	"github.com/bangerdev/banger/internal/ext4"
	"github.com/bangerdev/banger/internal/faultinject"
	"github.com/bangerdev/banger/internal/flatten"
	"github.com/bangerdev/banger/internal/opid"
	"github.com/bangerdev/banger/internal/progress"
)

// Sentinel errors callers and tests can match with errors.Is.
var (
	// ErrDigestMismatch: a layer blob (downloaded or cached) does not hash
	// to its digest. A cached blob that fails is deleted.
	ErrDigestMismatch = errors.New("layer digest mismatch")
	// ErrTooLarge: a layer is larger than Options.MaxLayerSize.
	ErrTooLarge = errors.New("layer exceeds its size cap")
	// ErrUnsupportedLayer: a layer that is neither tar, gzip nor zstd.
	ErrUnsupportedLayer = errors.New("unsupported layer media type")
)

// DefaultPlatform is pulled when Options.Platform is empty.
const DefaultPlatform = "linux/amd64"

// DefaultMaxLayerSize caps one compressed layer blob.
const DefaultMaxLayerSize = 16 << 30

// Options configures Pull. LayersDir is required.
type Options struct {
	LayersDir string // digest-addressed blob cache, shared between pulls
	// WorkDir holds the temporary rootfs; defaults to the destination's
	// directory (same filesystem, so no cross-device copies).
	WorkDir  string
	Platform string // "os/arch[/variant]"; DefaultPlatform when empty
	// Insecure allows plain HTTP, for registries on 127.0.0.1.
	Insecure  bool
	Keychain  authn.Keychain    // authn.DefaultKeychain (Docker config) when nil
	Transport http.RoundTripper // remote.DefaultTransport when nil
	// RecordOwnership makes the flattener record ownership for the image
	// builder instead of chowning; it is forced on when not running as root.
	RecordOwnership bool
	MaxLayerSize    int64 // DefaultMaxLayerSize when 0
	Flatten         flatten.Options
	Progress        progress.Func
	Logger          *slog.Logger
}

// Layer describes one layer of a pulled image.
type Layer struct {
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	MediaType string `json:"media_type"`
}

// Config is the part of the image configuration a VM can use.
type Config struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// Result describes a finished pull.
type Result struct {
	Ref         string            `json:"ref"`          // fully qualified reference pulled
	Digest      string            `json:"digest"`       // manifest digest of the platform image
	ImageDigest string            `json:"image_digest"` // sha256 of the ext4 file
	SizeBytes   int64             `json:"size_bytes"`   // size of the ext4 file
	Path        string            `json:"path"`
	Platform    string            `json:"platform"`
	Layers      []Layer           `json:"layers"`
	Config      Config            `json:"config"`
	Skipped     []flatten.Skipped `json:"skipped,omitempty"` // entries recreated by the image builder (device nodes)
}

// Pull fetches ref and writes its root filesystem as an ext4 image at dest.
// On failure nothing is left at dest; cached layers that verified stay.
func Pull(ctx context.Context, ref, dest string, opts Options) (*Result, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.LayersDir == "" {
		return nil, errors.New("pull image: no layers directory given")
	}
	if opts.MaxLayerSize <= 0 {
		opts.MaxLayerSize = DefaultMaxLayerSize
	}
	platform := opts.Platform
	if platform == "" {
		platform = DefaultPlatform
	}
	plat, err := v1.ParsePlatform(platform)
	if err != nil {
		return nil, fmt.Errorf("pull %s: platform %q: %w", ref, platform, err)
	}
	var nameOpts []name.Option
	if opts.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nameOpts...)
	if err != nil {
		return nil, fmt.Errorf("pull %s: parse reference: %w", ref, err)
	}
	keychain := opts.Keychain
	if keychain == nil {
		keychain = authn.DefaultKeychain
	}
	remoteOpts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(keychain), remote.WithPlatform(*plat)}
	if opts.Transport != nil {
		remoteOpts = append(remoteOpts, remote.WithTransport(opts.Transport))
	}

	opts.Progress.Stage("resolve", r.Name())
	img, err := remote.Image(r, remoteOpts...)
	if err != nil {
		return nil, fmt.Errorf("pull %s: fetch manifest: %w", r.Name(), err)
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("pull %s: manifest digest: %w", r.Name(), err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("pull %s: image config: %w", r.Name(), err)
	}
	if cfg.OS != "" && (cfg.OS != plat.OS || cfg.Architecture != plat.Architecture) {
		return nil, fmt.Errorf("pull %s: image is %s/%s, want %s", r.Name(), cfg.OS, cfg.Architecture, platform)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("pull %s: list layers: %w", r.Name(), err)
	}
	res := &Result{
		Ref: r.Name(), Digest: digest.String(), Platform: platform, Path: dest,
		Config: Config{Entrypoint: cfg.Config.Entrypoint, Cmd: cfg.Config.Cmd, Env: cfg.Config.Env,
			WorkingDir: cfg.Config.WorkingDir, User: cfg.Config.User},
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return nil, fmt.Errorf("pull %s: layer digest: %w", r.Name(), err)
		}
		size, err := l.Size()
		if err != nil {
			return nil, fmt.Errorf("pull %s: layer %s size: %w", r.Name(), d, err)
		}
		mt, _ := l.MediaType()
		if size > opts.MaxLayerSize {
			return nil, fmt.Errorf("pull %s: layer %s is %d bytes: %w (%d)", r.Name(), d, size, ErrTooLarge, opts.MaxLayerSize)
		}
		res.Layers = append(res.Layers, Layer{Digest: d.String(), Size: size, MediaType: string(mt)})
	}

	c := &cache{dir: opts.LayersDir, max: opts.MaxLayerSize, log: log}
	fresh, err := c.fetchAll(ctx, layers, res.Layers, opts.Progress)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", r.Name(), err)
	}

	work := opts.WorkDir
	if work == "" {
		work = filepath.Dir(dest)
	}
	rootfs, err := os.MkdirTemp(work, ".rootfs-")
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", r.Name(), err)
	}
	defer os.RemoveAll(rootfs)

	fopts := opts.Flatten
	fopts.Logger = log
	fopts.RecordOwnership = opts.RecordOwnership || os.Geteuid() != 0
	flat, err := applyLayers(ctx, c, rootfs, res.Layers, fresh, fopts, opts.Progress)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", r.Name(), err)
	}
	res.Skipped = flat.Skipped
	faultinject.Pause(ctx, faultinject.Point("image-pull", "flatten"))

	opts.Progress.Stage("mkfs", "building ext4 image")
	eopts := ext4.Options{Logger: log}
	for _, a := range flat.Attrs {
		eopts.Overrides = append(eopts.Overrides, ext4.Override{Path: a.Path, UID: a.UID, GID: a.GID, Mode: a.Mode, Xattrs: a.Xattrs})
	}
	for _, s := range flat.Skipped {
		if s.Mode&0o170000 != 0 { // device nodes and fifos carry a type
			eopts.Nodes = append(eopts.Nodes, ext4.Node{Path: s.Path, Mode: s.Mode, UID: s.UID, GID: s.GID, Major: s.Major, Minor: s.Minor})
		}
	}
	size, err := ext4.Make(ctx, rootfs, dest, eopts)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", r.Name(), err)
	}
	res.SizeBytes = size
	sum, err := fileSHA256(dest)
	if err != nil {
		os.Remove(dest)
		return nil, fmt.Errorf("pull %s: hash image: %w", r.Name(), err)
	}
	res.ImageDigest = "sha256:" + sum
	opts.Progress.Stage("done", res.Digest)
	log.InfoContext(ctx, "pulled image", "ref", res.Ref, "digest", res.Digest, "layers", len(res.Layers), "image", dest, "size", size)
	return res, nil
}

func applyLayers(ctx context.Context, c *cache, rootfs string, layers []Layer, fresh map[string]bool, fopts flatten.Options, report progress.Func) (*flatten.Result, error) {
	fopts.Logger = opid.Logger(ctx, fopts.Logger) // the applier logs without a context
	a, err := flatten.New(rootfs, fopts)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	for i, l := range layers {
		report.Report(progress.Event{Stage: "flatten", Item: l.Digest, Done: int64(i), Total: int64(len(layers)), Unit: "layers"})
		if err := c.apply(ctx, a, l, !fresh[l.Digest]); err != nil {
			return nil, fmt.Errorf("apply layer %s: %w", l.Digest, err)
		}
	}
	report.Report(progress.Event{Stage: "flatten", Done: int64(len(layers)), Total: int64(len(layers)), Unit: "layers"})
	return a.Finish()
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// cache stores compressed layer blobs as DIR/sha256/HEX.
type cache struct {
	dir string
	max int64
	log *slog.Logger
}

func (c *cache) path(digest string) (string, error) {
	algo, hexd, ok := strings.Cut(digest, ":")
	if !ok || algo != "sha256" || len(hexd) != 64 || strings.Trim(hexd, "0123456789abcdef") != "" {
		return "", fmt.Errorf("unsupported layer digest %q", digest)
	}
	return filepath.Join(c.dir, algo, hexd), nil
}

// fetchAll downloads the layers not yet cached, a few at a time, and
// reports which were fetched now (they need no second verification).
func (c *cache) fetchAll(ctx context.Context, layers []v1.Layer, info []Layer, report progress.Func) (map[string]bool, error) {
	if err := os.MkdirAll(filepath.Join(c.dir, "sha256"), 0o755); err != nil {
		return nil, fmt.Errorf("create layer cache: %w", err)
	}
	var total int64
	for _, l := range info {
		total += l.Size
	}
	var (
		mu    sync.Mutex
		done  int64
		fresh = map[string]bool{}
		errs  []error
		wg    sync.WaitGroup
		sem   = make(chan struct{}, 3)
	)
	overall := func(n int64) {
		mu.Lock()
		done += n
		d := done
		mu.Unlock()
		report.Report(progress.Event{Stage: "pull", Done: d, Total: total, Unit: "bytes"})
	}
	for i, l := range layers {
		p, err := c.path(info[i].Digest)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(p); err == nil {
			c.log.DebugContext(ctx, "layer cached", "digest", info[i].Digest)
			report.Report(progress.Event{Stage: "layer " + short(info[i].Digest), Message: "cached", Done: info[i].Size, Total: info[i].Size})
			overall(info[i].Size)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				mu.Lock()
				errs = append(errs, ctx.Err())
				mu.Unlock()
				return
			}
			defer func() { <-sem }()
			err := c.download(ctx, l, info[i], p, report, overall)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("fetch layer %s: %w", info[i].Digest, err))
				return
			}
			fresh[info[i].Digest] = true
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return fresh, nil
}

func short(digest string) string {
	if _, h, ok := strings.Cut(digest, ":"); ok && len(h) > 12 {
		return h[:12]
	}
	return digest
}

// download streams the compressed blob into a staging file while hashing
// it, and renames it into the cache only when size and digest match.
func (c *cache) download(ctx context.Context, l v1.Layer, info Layer, dst string, report progress.Func, overall func(int64)) error {
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	// The shared verified-download path: capped at the announced size,
	// hashed while streaming, renamed into the cache only on a match.
	stage := "layer " + short(info.Digest)
	var last int64
	paused := false
	err = download.Save(ctx, rc, download.Spec{
		URL:      info.Digest,
		SHA256:   strings.TrimPrefix(info.Digest, "sha256:"),
		Size:     info.Size,
		MaxBytes: info.Size,
		Label:    stage,
	}, dst, func(ev progress.Event) {
		report.Report(progress.Event{Stage: stage, Done: ev.Done, Total: info.Size, Unit: "bytes"})
		overall(ev.Done - last)
		last = ev.Done
		if !paused && ev.Done > 0 {
			// A fault test stops here with a partial blob on disk.
			paused = true
			faultinject.Pause(ctx, faultinject.Point("image-pull", "layer"))
		}
	})
	if errors.Is(err, download.ErrHashMismatch) || errors.Is(err, download.ErrTruncated) || errors.Is(err, download.ErrTooLarge) {
		return fmt.Errorf("%w: %w", ErrDigestMismatch, err)
	}
	return err
}

// apply decompresses a cached blob into the flattener. With verify, the
// blob is hashed on the way (it came from an earlier pull); a mismatch
// removes it from the cache.
func (c *cache) apply(ctx context.Context, a *flatten.Applier, l Layer, verify bool) error {
	p, err := c.path(l.Digest)
	if err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("open cached layer: %w", err)
	}
	defer f.Close()
	var h hash.Hash
	var src io.Reader = f
	if verify {
		h = sha256.New()
		src = io.TeeReader(f, h)
	}
	br := bufio.NewReaderSize(src, 1<<20)
	tarStream, closeFn, err := decompress(br)
	if err != nil {
		return err
	}
	// Decompress on another goroutine: it overlaps with the file writes of
	// the extraction, like tar's gzip child process does.
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := io.CopyBuffer(pw, tarStream, make([]byte, 1<<20))
		pw.CloseWithError(err)
	}()
	applyErr := a.Apply(ctx, bufio.NewReaderSize(pr, 1<<20))
	pr.CloseWithError(errors.New("layer extraction finished"))
	<-done
	closeFn()
	if verify {
		// Hash whatever the tar reader left (padding, trailing blocks).
		if _, err := io.Copy(io.Discard, br); err != nil {
			return fmt.Errorf("read cached layer: %w", err)
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != l.Digest {
			os.Remove(p)
			return fmt.Errorf("cached blob %s: %w: got %s (removed from the cache; pull again)", p, ErrDigestMismatch, got)
		}
	}
	return applyErr
}

// decompress picks the decoder from the blob's magic number rather than
// trusting the media type (registries mislabel layers).
func decompress(br *bufio.Reader) (io.Reader, func(), error) {
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("read layer: %w", err)
	}
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("open gzip layer: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case len(magic) == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<30))
		if err != nil {
			return nil, nil, fmt.Errorf("open zstd layer: %w", err)
		}
		return zr, zr.Close, nil
	default:
		// Uncompressed tar: the tar reader rejects anything else.
		return br, func() {}, nil
	}
}
