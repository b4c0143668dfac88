// Package flatten applies OCI/Docker layer tars, in order, onto a root
// directory. Layers are untrusted: every path is resolved relative to a
// directory file descriptor with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS),
// so no entry can be written outside the root or through a symlink, whatever
// the layers planted before it. Symlink targets are stored verbatim and never
// followed.
//
// # Why banger has two tar extractors
//
// This one builds a whole root filesystem for an image (image pull and image
// import). The guest agent's ExtractTar (vm cp, vm sync) copies one name into
// a directory a user chose. Both refuse to leave their root or to write
// through a symlink, but they want opposite things from the same bytes, so
// they are kept apart on purpose:
//
//   - Layers carry OCI semantics: whiteouts and opaque directories delete
//     what lower layers made, later entries replace earlier ones, and hard
//     links may point anywhere in the image. A copy has none of that: only
//     one name and what is beneath it, hard links only to files of the same
//     archive.
//   - An image must keep what the layer says: set-uid binaries (sudo,
//     passwd), ownership, file capabilities and other xattrs (recorded for
//     the image builder when the daemon is not root), device nodes (recorded
//     in Result.Skipped to be recreated). A copy drops set-uid, set-gid and
//     sticky bits, applies no ownership and refuses devices and fifos.
//   - A failed layer leaves a staging directory that is thrown away whole; a
//     failed copy lands in a live directory, so ExtractTar undoes what it
//     created and keeps existing directories' modes.
//   - ExtractTar runs in the guest too (copy in), inside the small static
//     agent binary, so it uses only os.Root; this package uses openat2
//     through golang.org/x/sys/unix and runs only on the host.
//
// Each keeps its own hostile-input tests (layer_test.go and fuzz_test.go
// here; tarfs_hostile_test.go and FuzzExtractTar in the agent package).
package flatten

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Sentinel errors callers and tests can match with errors.Is.
var (
	// ErrUnsafePath marks an entry whose name or link target would leave the
	// root, pass through a symlink, or is otherwise malformed.
	ErrUnsafePath = errors.New("unsafe path in layer")
	// ErrTooLarge marks an entry or a layer set beyond the configured caps.
	ErrTooLarge = errors.New("layer content exceeds its size cap")
)

// Default caps; Options overrides them.
const (
	DefaultMaxEntrySize = 16 << 30
	DefaultMaxTotalSize = 64 << 30
	DefaultMaxEntries   = 4 << 20
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// Options tunes an Applier. The zero value is usable.
type Options struct {
	Logger *slog.Logger
	// RecordOwnership, when true, leaves files owned by the caller and records
	// the wanted uid/gid/mode/xattrs in Result.Attrs instead, for the image
	// builder to apply (a rootless daemon cannot chown). Set it when not root.
	RecordOwnership bool
	MaxEntrySize    int64 // per regular file; DefaultMaxEntrySize when 0
	MaxTotalSize    int64 // regular-file bytes over all layers; DefaultMaxTotalSize when 0
	MaxEntries      int   // entries over all layers; DefaultMaxEntries when 0
}

// Attr is the ownership, full mode (type and permission bits, as st_mode)
// and extended attributes one path must end up with in the image. Path is
// absolute within the image ("/" for the root).
type Attr struct {
	Path   string
	UID    int
	GID    int
	Mode   uint32
	Xattrs map[string][]byte
}

// Skipped is an entry that was not extracted: device nodes and fifos (which
// an unprivileged extractor cannot create) and unknown entry types. The
// image builder may recreate nodes from it.
type Skipped struct {
	Path     string
	Typeflag byte
	Mode     uint32 // st_mode including the type bits
	UID, GID int
	Major    int64
	Minor    int64
	Reason   string
}

// Result summarises a finished extraction.
type Result struct {
	// Attrs lists, sorted by path, attributes the filesystem on disk does not
	// carry: every entry when RecordOwnership is set, otherwise only xattrs
	// the host filesystem refused.
	Attrs   []Attr
	Skipped []Skipped
	Entries int
	Bytes   int64
}

type dirMeta struct {
	mode     uint32
	uid, gid int
	mtime    time.Time
}

// Applier applies layers onto one root directory. It is not safe for
// concurrent use. Call Apply once per layer, bottom first, then Finish.
type Applier struct {
	rootFD int
	opts   Options
	log    *slog.Logger

	dirs    map[string]dirMeta // deferred directory metadata, by rel path
	attrs   map[string]*Attr   // by rel path ("" for root)
	skipped map[string]Skipped // by rel path; dropped again if a later entry removes it
	entries int
	total   int64
	buf     []byte

	layerPaths map[string]struct{} // paths (and ancestors) written by the current layer

	cachedDir string // rel path of cachedFD; "" means none (root is rootFD)
	cachedFD  int
}

// New opens root (which must exist and be a directory) for extraction.
func New(root string, opts Options) (*Applier, error) {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open extraction root %q: %w", root, err)
	}
	if opts.MaxEntrySize <= 0 {
		opts.MaxEntrySize = DefaultMaxEntrySize
	}
	if opts.MaxTotalSize <= 0 {
		opts.MaxTotalSize = DefaultMaxTotalSize
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Applier{
		rootFD:     fd,
		opts:       opts,
		log:        log,
		dirs:       map[string]dirMeta{},
		attrs:      map[string]*Attr{},
		skipped:    map[string]Skipped{},
		buf:        make([]byte, 1<<20),
		layerPaths: map[string]struct{}{},
		cachedFD:   -1,
	}, nil
}

// Close releases the root descriptor. Finish calls it.
func (a *Applier) Close() error {
	a.dropCache()
	if a.rootFD < 0 {
		return nil
	}
	err := unix.Close(a.rootFD)
	a.rootFD = -1
	return err
}

// Apply extracts one uncompressed layer tar.
func (a *Applier) Apply(ctx context.Context, layer io.Reader) error {
	if a.rootFD < 0 {
		return errors.New("apply layer: applier is closed")
	}
	a.layerPaths = map[string]struct{}{}
	tr := tar.NewReader(layer)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read layer tar: %w", err)
		}
		a.entries++
		if a.entries > a.opts.MaxEntries {
			return fmt.Errorf("layer entries beyond %d: %w", a.opts.MaxEntries, ErrTooLarge)
		}
		if err := a.entry(hdr, tr); err != nil {
			return fmt.Errorf("extract %q: %w", hdr.Name, err)
		}
	}
}

// Finish applies deferred directory metadata (after all layers, so later
// entries do not disturb mtimes), closes the applier and reports.
func (a *Applier) Finish() (*Result, error) {
	defer a.Close()
	if a.rootFD < 0 {
		return nil, errors.New("finish extraction: applier is closed")
	}
	rels := make([]string, 0, len(a.dirs))
	for rel := range a.dirs {
		rels = append(rels, rel)
	}
	// Deepest first, so a read-only parent is set after its children.
	sort.Sort(sort.Reverse(sort.StringSlice(rels)))
	for _, rel := range rels {
		if err := a.applyDirMeta(rel, a.dirs[rel]); err != nil {
			return nil, fmt.Errorf("set directory metadata of %q: %w", rel, err)
		}
	}
	res := &Result{Entries: a.entries, Bytes: a.total}
	for _, sk := range a.skipped {
		res.Skipped = append(res.Skipped, sk)
	}
	sort.Slice(res.Skipped, func(i, j int) bool { return res.Skipped[i].Path < res.Skipped[j].Path })
	for _, at := range a.attrs {
		res.Attrs = append(res.Attrs, *at)
	}
	sort.Slice(res.Attrs, func(i, j int) bool { return res.Attrs[i].Path < res.Attrs[j].Path })
	return res, nil
}

// cleanName turns a tar name into a path relative to the root: leading "/"
// and "." components are dropped (as tar does), ".." and NUL are refused.
// The root itself is "".
func cleanName(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: name contains NUL", ErrUnsafePath)
	}
	parts := strings.Split(name, "/")
	out := parts[:0]
	for _, p := range parts {
		switch p {
		case "", ".":
			continue
		case "..":
			return "", fmt.Errorf("%w: %q has a .. component", ErrUnsafePath, name)
		}
		out = append(out, p)
	}
	return strings.Join(out, "/"), nil
}

func (a *Applier) markLayerPath(rel string) {
	for rel != "" && rel != "." {
		if _, ok := a.layerPaths[rel]; ok {
			return
		}
		a.layerPaths[rel] = struct{}{}
		rel = path.Dir(rel)
	}
}

func (a *Applier) entry(hdr *tar.Header, r io.Reader) error {
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	dir, base := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")

	if strings.HasPrefix(base, whiteoutPrefix) {
		return a.whiteout(dir, base)
	}
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	if rel == "" {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("%w: non-directory entry for the root", ErrUnsafePath)
		}
		a.recordDir(rel, hdr)
		return nil
	}
	a.markLayerPath(rel)

	switch hdr.Typeflag {
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		// Make its parents and clear the name so the image builder can
		// create the node there.
		pfd, err := a.parent(dir, true)
		if err != nil {
			return err
		}
		if err := a.removeAt(pfd, dir, base); err != nil {
			return err
		}
		a.skip(rel, hdr, "device nodes and fifos are not created during extraction")
		return nil
	case tar.TypeDir, tar.TypeReg, tar.TypeRegA, tar.TypeSymlink, tar.TypeLink:
	default:
		a.skip(rel, hdr, fmt.Sprintf("unsupported entry type %q", hdr.Typeflag))
		return nil
	}

	pfd, err := a.parent(dir, true)
	if err != nil {
		return err
	}

	var linkRel string
	if hdr.Typeflag == tar.TypeLink {
		if linkRel, err = cleanName(hdr.Linkname); err != nil {
			return fmt.Errorf("hardlink target: %w", err)
		}
		if linkRel == "" {
			return fmt.Errorf("%w: hardlink to the root", ErrUnsafePath)
		}
		if linkRel == rel {
			return nil // a link to itself changes nothing
		}
	}
	if hdr.Typeflag == tar.TypeSymlink && strings.IndexByte(hdr.Linkname, 0) >= 0 {
		return fmt.Errorf("%w: symlink target contains NUL", ErrUnsafePath)
	}

	// Replace whatever is there, except a directory stays a directory.
	var st unix.Stat_t
	switch err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil:
		if hdr.Typeflag == tar.TypeDir && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			a.recordDir(rel, hdr)
			return a.setXattrsAt(rel, pfd, base, hdr)
		}
		if err := a.removeAt(pfd, dir, base); err != nil {
			return err
		}
		if pfd, err = a.parent(dir, true); err != nil {
			return err
		}
	case errors.Is(err, unix.ENOENT):
	default:
		return fmt.Errorf("inspect existing entry: %w", err)
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
		a.recordDir(rel, hdr)
		return a.setXattrsAt(rel, pfd, base, hdr)
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return fmt.Errorf("create symlink: %w", err)
		}
		return a.setLinkMeta(rel, pfd, base, hdr)
	case tar.TypeLink:
		return a.hardlink(rel, pfd, base, linkRel)
	default:
		return a.writeFile(rel, pfd, base, hdr, r)
	}
}

func (a *Applier) skip(rel string, hdr *tar.Header, reason string) {
	mode := uint32(hdr.Mode) & 0o7777
	switch hdr.Typeflag {
	case tar.TypeChar:
		mode |= unix.S_IFCHR
	case tar.TypeBlock:
		mode |= unix.S_IFBLK
	case tar.TypeFifo:
		mode |= unix.S_IFIFO
	}
	a.log.Warn("skipped layer entry", "path", "/"+rel, "type", string(hdr.Typeflag), "reason", reason)
	a.skipped[rel] = Skipped{
		Path: "/" + rel, Typeflag: hdr.Typeflag, Mode: mode,
		UID: hdr.Uid, GID: hdr.Gid, Major: hdr.Devmajor, Minor: hdr.Devminor, Reason: reason,
	}
}

// whiteout handles ".wh.NAME" (delete NAME from lower layers) and
// ".wh..wh..opq" (hide the lower contents of the directory).
func (a *Applier) whiteout(dir, base string) error {
	if base == whiteoutOpaque {
		a.markLayerPath(dir)
		return a.opaque(dir)
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		return nil // other aufs metadata (.wh..wh.plnk, ...) carries nothing for us
	}
	target := strings.TrimPrefix(base, whiteoutPrefix)
	if target == "" || target == "." || target == ".." {
		return fmt.Errorf("%w: whiteout of %q", ErrUnsafePath, target)
	}
	pfd, err := a.parent(dir, false)
	if errors.Is(err, unix.ENOENT) {
		return nil // nothing below to hide
	}
	if err != nil {
		return err
	}
	return a.removeAt(pfd, dir, target)
}

func (a *Applier) opaque(dir string) error {
	a.dropCache() // removals below may invalidate cached directories
	var fd int
	var err error
	if dir == "" {
		fd, err = unix.Openat(a.rootFD, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	} else {
		fd, err = openBeneath(a.rootFD, dir, unix.O_RDONLY|unix.O_DIRECTORY)
	}
	if errors.Is(err, unix.ENOENT) {
		return nil // nothing below to hide
	}
	if err != nil {
		return describeResolve(dir, err)
	}
	defer unix.Close(fd)
	return a.pruneDir(fd, dir, 0)
}

// pruneDir removes from the directory open at fd (rel path dir) everything
// the current layer did not write, descending into directories it kept.
func (a *Applier) pruneDir(fd int, dir string, depth int) error {
	if depth > 4096 {
		return fmt.Errorf("%w: directory nesting too deep", ErrUnsafePath)
	}
	names, err := readDirNames(fd)
	if err != nil {
		return fmt.Errorf("list %q: %w", dir, err)
	}
	for _, name := range names {
		rel := path.Join(dir, name)
		if _, ok := a.layerPaths[rel]; !ok {
			if err := removeAllAt(fd, name, 0); err != nil {
				return fmt.Errorf("remove %q: %w", rel, err)
			}
			a.forget(rel)
			continue
		}
		cfd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			continue
		}
		if err != nil {
			return fmt.Errorf("open %q: %w", rel, err)
		}
		err = a.pruneDir(cfd, rel, depth+1)
		unix.Close(cfd)
		if err != nil {
			return err
		}
	}
	return nil
}

func readDirNames(fd int) ([]string, error) {
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dfd), "dir")
	defer f.Close()
	return f.Readdirnames(-1)
}

// removeAt deletes name (recursively) from the directory pfd at rel dir.
func (a *Applier) removeAt(pfd int, dir, name string) error {
	// Keep the parent descriptor alive while the cache is dropped.
	keep, err := unix.Dup(pfd)
	if err != nil {
		return err
	}
	defer unix.Close(keep)
	a.dropCache()
	if err := removeAllAt(keep, name, 0); err != nil {
		return fmt.Errorf("remove existing %q: %w", path.Join(dir, name), err)
	}
	a.forget(path.Join(dir, name))
	return nil
}

// removeAllAt removes name under dirfd without following symlinks.
func removeAllAt(dirfd int, name string, depth int) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return err
	}
	if depth > 4096 {
		return fmt.Errorf("%w: directory nesting too deep", ErrUnsafePath)
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	// A read-only directory (we may not be root) must be writable to empty it.
	_ = unix.Fchmod(fd, 0o700)
	names, err := readDirNames(fd)
	if err == nil {
		for _, n := range names {
			if err = removeAllAt(fd, n, depth+1); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	err = unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// forget drops recorded metadata for rel and everything below it.
func (a *Applier) forget(rel string) {
	prefix := rel + "/"
	for k := range a.dirs {
		if k == rel || strings.HasPrefix(k, prefix) {
			delete(a.dirs, k)
		}
	}
	for k := range a.attrs {
		if k == rel || strings.HasPrefix(k, prefix) {
			delete(a.attrs, k)
		}
	}
	for k := range a.skipped {
		if k == rel || strings.HasPrefix(k, prefix) {
			delete(a.skipped, k)
		}
	}
}

func (a *Applier) dropCache() {
	if a.cachedFD >= 0 {
		unix.Close(a.cachedFD)
	}
	a.cachedFD, a.cachedDir = -1, ""
}

// parent returns a descriptor for directory dir (rel to the root; "" is the
// root), resolved without following any symlink and never leaving the root.
// With create, missing directories are made (0755, root-owned). The
// descriptor belongs to the Applier: do not close it.
func (a *Applier) parent(dir string, create bool) (int, error) {
	if dir == "" {
		return a.rootFD, nil
	}
	if a.cachedFD >= 0 && a.cachedDir == dir {
		return a.cachedFD, nil
	}
	fd, err := openBeneath(a.rootFD, dir, unix.O_PATH|unix.O_DIRECTORY)
	if errors.Is(err, unix.ENOENT) && create {
		fd, err = a.mkdirAll(dir)
	}
	if err != nil {
		return -1, describeResolve(dir, err)
	}
	a.dropCache()
	a.cachedFD, a.cachedDir = fd, dir
	return fd, nil
}

func openBeneath(dirfd int, rel string, flags uint64) (fd int, err error) {
	// EAGAIN/EINTR are transient (a concurrent rename elsewhere); retry a
	// bounded number of times.
	for range 16 {
		fd, err = unix.Openat2(dirfd, rel, &unix.OpenHow{
			Flags:   flags | unix.O_CLOEXEC | unix.O_NOFOLLOW,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EAGAIN) {
			return fd, err
		}
	}
	return fd, err
}

func describeResolve(dir string, err error) error {
	switch {
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
		// openat2 reports a symlink in the final component as ENOTDIR.
		return fmt.Errorf("%w: %q is not a directory inside the root (a symlink or a file is in the way)", ErrUnsafePath, dir)
	case errors.Is(err, unix.EXDEV):
		return fmt.Errorf("%w: %q leaves the root", ErrUnsafePath, dir)
	}
	return fmt.Errorf("open parent %q: %w", dir, err)
}

// mkdirAll creates dir one component at a time from the root, refusing to
// step through symlinks.
func (a *Applier) mkdirAll(dir string) (int, error) {
	fd, err := unix.Dup(a.rootFD)
	if err != nil {
		return -1, err
	}
	rel := ""
	for _, comp := range strings.Split(dir, "/") {
		rel = path.Join(rel, comp)
		next, err := openBeneath(fd, comp, unix.O_PATH|unix.O_DIRECTORY)
		if errors.Is(err, unix.ENOENT) {
			if err = unix.Mkdirat(fd, comp, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				next, err = openBeneath(fd, comp, unix.O_PATH|unix.O_DIRECTORY)
				if err == nil {
					a.implicitDir(rel)
				}
			}
		}
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// implicitDir records a parent directory the layer did not list, as Docker
// makes it: 0755, owned by root.
func (a *Applier) implicitDir(rel string) {
	if _, ok := a.dirs[rel]; ok {
		return
	}
	a.dirs[rel] = dirMeta{mode: 0o755}
	if a.opts.RecordOwnership {
		a.attrs[rel] = &Attr{Path: "/" + rel, Mode: unix.S_IFDIR | 0o755}
	}
}

func (a *Applier) recordDir(rel string, hdr *tar.Header) {
	mode := uint32(hdr.Mode) & 0o7777
	a.dirs[rel] = dirMeta{mode: mode, uid: hdr.Uid, gid: hdr.Gid, mtime: hdr.ModTime}
	if a.opts.RecordOwnership {
		a.attrs[rel] = &Attr{Path: "/" + rel, UID: hdr.Uid, GID: hdr.Gid, Mode: unix.S_IFDIR | mode, Xattrs: xattrsOf(hdr)}
	}
}

func (a *Applier) applyDirMeta(rel string, m dirMeta) error {
	var fd int
	if rel == "" {
		var err error
		if fd, err = unix.Openat(a.rootFD, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
			return err
		}
	} else {
		var err error
		fd, err = openBeneath(a.rootFD, rel, unix.O_RDONLY|unix.O_DIRECTORY)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return nil // replaced or removed after it was recorded
		}
		if err != nil {
			return err
		}
	}
	defer unix.Close(fd)
	mode := m.mode
	if a.opts.RecordOwnership {
		mode = (mode | 0o700) &^ (unix.S_ISUID | unix.S_ISGID)
	} else if err := unix.Fchown(fd, m.uid, m.gid); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if m.mtime.IsZero() {
		return nil
	}
	ts := []unix.Timespec{unix.NsecToTimespec(m.mtime.UnixNano()), unix.NsecToTimespec(m.mtime.UnixNano())}
	return unix.UtimesNanoAt(fd, ".", ts, 0)
}

func xattrsOf(hdr *tar.Header) map[string][]byte {
	var out map[string][]byte
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok || name == "" {
			continue
		}
		if out == nil {
			out = map[string][]byte{}
		}
		out[name] = []byte(v)
	}
	return out
}

func (a *Applier) writeFile(rel string, pfd int, base string, hdr *tar.Header, r io.Reader) error {
	if hdr.Size < 0 || hdr.Size > a.opts.MaxEntrySize {
		return fmt.Errorf("size %d beyond %d: %w", hdr.Size, a.opts.MaxEntrySize, ErrTooLarge)
	}
	a.total += hdr.Size
	if a.total > a.opts.MaxTotalSize {
		return fmt.Errorf("layers hold more than %d bytes: %w", a.opts.MaxTotalSize, ErrTooLarge)
	}
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create file: %w", err)
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	if n, err := io.CopyBuffer(onlyWriter{f}, io.LimitReader(r, hdr.Size), a.buf); err != nil {
		return fmt.Errorf("write file: %w", err)
	} else if n != hdr.Size {
		return fmt.Errorf("write file: layer ended after %d of %d bytes", n, hdr.Size)
	}
	mode := uint32(hdr.Mode) & 0o7777
	if a.opts.RecordOwnership {
		a.attrs[rel] = &Attr{Path: "/" + rel, UID: hdr.Uid, GID: hdr.Gid, Mode: unix.S_IFREG | mode, Xattrs: xattrsOf(hdr)}
		mode = (mode | 0o600) &^ (unix.S_ISUID | unix.S_ISGID)
	} else if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("chown file: %w", err)
	}
	// After chown, which clears setuid bits.
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("chmod file: %w", err)
	}
	if !a.opts.RecordOwnership {
		a.setXattrs(rel, hdr, func(name string, v []byte) error { return unix.Fsetxattr(fd, name, v, 0) })
	}
	return setMtime(pfd, base, hdr.ModTime)
}

// onlyWriter hides ReadFrom so io.CopyBuffer uses our buffer.
type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }

func setMtime(pfd int, base string, t time.Time) error {
	if t.IsZero() {
		return nil
	}
	ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set mtime: %w", err)
	}
	return nil
}

func (a *Applier) setLinkMeta(rel string, pfd int, base string, hdr *tar.Header) error {
	if a.opts.RecordOwnership {
		a.attrs[rel] = &Attr{Path: "/" + rel, UID: hdr.Uid, GID: hdr.Gid, Mode: unix.S_IFLNK | 0o777}
	} else if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown symlink: %w", err)
	}
	return setMtime(pfd, base, hdr.ModTime)
}

// setXattrsAt sets a directory's xattrs through a descriptor opened
// without following symlinks.
func (a *Applier) setXattrsAt(rel string, pfd int, base string, hdr *tar.Header) error {
	if a.opts.RecordOwnership || len(xattrsOf(hdr)) == 0 {
		return nil
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open directory for xattrs: %w", err)
	}
	defer unix.Close(fd)
	a.setXattrs(rel, hdr, func(name string, v []byte) error { return unix.Fsetxattr(fd, name, v, 0) })
	return nil
}

// setXattrs applies the entry's xattrs; those the host filesystem refuses
// are recorded in Attrs for the image builder instead.
func (a *Applier) setXattrs(rel string, hdr *tar.Header, set func(string, []byte) error) {
	for name, v := range xattrsOf(hdr) {
		if err := set(name, v); err != nil {
			a.log.Debug("xattr deferred to image build", "path", "/"+rel, "xattr", name, "err", err)
			at := a.attrs[rel]
			if at == nil {
				mode := uint32(hdr.Mode) & 0o7777
				if hdr.Typeflag == tar.TypeDir {
					mode |= unix.S_IFDIR
				} else {
					mode |= unix.S_IFREG
				}
				at = &Attr{Path: "/" + rel, UID: hdr.Uid, GID: hdr.Gid, Mode: mode, Xattrs: map[string][]byte{}}
				a.attrs[rel] = at
			}
			at.Xattrs[name] = v
		}
	}
}

func (a *Applier) hardlink(rel string, pfd int, base, linkRel string) error {
	ldir, lbase := path.Split(linkRel)
	ldir = strings.TrimSuffix(ldir, "/")
	// Hold our own descriptor for the destination: parent() may replace the cache.
	dst, err := unix.Dup(pfd)
	if err != nil {
		return err
	}
	defer unix.Close(dst)
	src, err := a.parent(ldir, false)
	if err != nil {
		return fmt.Errorf("hardlink target %q: %w", linkRel, err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(src, lbase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("hardlink target %q: %w", linkRel, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("%w: hardlink to directory %q", ErrUnsafePath, linkRel)
	}
	// Flags 0: link the entry itself, never what a symlink points to.
	if err := unix.Linkat(src, lbase, dst, base, 0); err != nil {
		return fmt.Errorf("create hardlink to %q: %w", linkRel, err)
	}
	if at, ok := a.attrs[linkRel]; ok {
		cp := *at
		cp.Path = "/" + rel
		a.attrs[rel] = &cp
	}
	return nil
}
