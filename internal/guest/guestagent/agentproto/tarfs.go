package agentproto

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Errors of ExtractTar; callers test them with errors.Is.
var (
	// ErrUnsafePath reports an entry that would land outside the one name
	// asked for, or be written through a symlink.
	ErrUnsafePath = errors.New("unsafe path in archive")
	// ErrUnsafeEntry reports an entry of a refused type (device, fifo, …).
	ErrUnsafeEntry = errors.New("refused entry in archive")
	// ErrArchiveLimit reports an archive over CopyLimits.
	ErrArchiveLimit = errors.New("archive over the copy limits")
)

// Default copy limits: generous for real trees (a big build output, a
// home directory), finite so a hostile sender cannot fill the disk or
// exhaust inodes without end.
const (
	DefaultCopyMaxBytes   int64 = 64 << 30
	DefaultCopyMaxEntries       = 1_000_000
)

// MaxEntryName is PATH_MAX: os.Root would create deeper trees than any
// tool could open by path.
const MaxEntryName = 4096

// CopyLimits bound what one extracted archive may write; zero fields mean
// the defaults.
type CopyLimits struct {
	MaxBytes   int64 // total size of regular files
	MaxEntries int   // number of entries
}

// WithDefaults fills the limits left at zero.
func (l CopyLimits) WithDefaults() CopyLimits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultCopyMaxBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultCopyMaxEntries
	}
	return l
}

// WriteTar writes src (a file, directory or symlink) to w as a tar stream
// whose entries are named after src's base name. Modes and mtimes are kept;
// symlinks are stored as symlinks and never followed, and every read goes
// through an os.Root at src's parent, so nothing outside it is read even if
// the tree changes during the walk. Devices, fifos and sockets are skipped.
func WriteTar(ctx context.Context, w io.Writer, src string) error {
	src = filepath.Clean(src)
	parent, base := filepath.Dir(src), filepath.Base(src)
	if src == string(filepath.Separator) {
		parent, base = src, "."
	}
	root, err := os.OpenRoot(parent)
	if err != nil {
		return fmt.Errorf("open %s: %w", parent, err)
	}
	defer root.Close()
	fsys := root.FS()
	tw := tar.NewWriter(w)

	top, err := fs.Lstat(fsys, base)
	if err != nil {
		return fmt.Errorf("stat %s: %w", src, err)
	}
	if !top.IsDir() {
		if err := writeTarEntry(tw, fsys, base, base, top); err != nil {
			return err
		}
		return tw.Close()
	}
	err = fs.WalkDir(fsys, base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == "." { // archiving "/": entries are named from its children
			return nil
		}
		info, err := d.Info() // lstat: a symlink stays a symlink
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed during the walk
			}
			return err
		}
		return writeTarEntry(tw, fsys, p, p, info)
	})
	if err != nil {
		return fmt.Errorf("archive %s: %w", src, err)
	}
	return tw.Close()
}

func writeTarEntry(tw *tar.Writer, fsys fs.FS, fsPath, name string, info fs.FileInfo) error {
	link := ""
	switch {
	case info.Mode()&fs.ModeSymlink != 0:
		target, err := fs.ReadLink(fsys, fsPath)
		if err != nil {
			return fmt.Errorf("read link %s: %w", fsPath, err)
		}
		link = target
	case info.Mode().IsRegular(), info.IsDir():
	default:
		return nil // device, fifo or socket
	}
	hdr, err := tar.FileInfoHeader(info, link)
	if err != nil {
		return fmt.Errorf("tar header for %s: %w", fsPath, err)
	}
	hdr.Name = name
	if info.IsDir() {
		hdr.Name += "/"
	}
	hdr.Format = tar.FormatPAX // sub-second mtimes, long names
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	hdr.Uname, hdr.Gname = "", ""
	if !info.Mode().IsRegular() {
		return tw.WriteHeader(hdr)
	}
	f, err := fsys.Open(fsPath)
	if err != nil {
		return fmt.Errorf("open %s: %w", fsPath, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("%s changed type while archiving", fsPath)
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	// Exactly hdr.Size bytes: a file that grew is cut, one that shrank fails.
	if _, err := io.CopyN(tw, f, hdr.Size); err != nil {
		return fmt.Errorf("archive %s: %w", fsPath, err)
	}
	return nil
}

// ExtractTar is one of banger's two tar extractors: this one copies (vm cp,
// vm sync, either direction); package flatten applies image layers, and
// its package doc says why the two are kept apart (layer semantics, set-uid
// and ownership kept there, refused here; undo; the guest binary's size).
//
// ExtractTar unpacks a tar stream, sent by a peer that is not trusted, into
// dir (created if missing). Only base (one file name, as WriteTar names
// entries; "." when the whole of "/" was asked for) and what is beneath it
// may be created: every other name, "..", absolute names, writes through a
// symlink (an existing one included: nothing is ever followed), hard links
// to anything but a file of this archive, devices, fifos and sockets are
// refused. Set-uid, set-gid and sticky bits are dropped; directories that
// already existed keep their mode and times; ownership is not applied
// (files belong to the extracting user). The archive is bounded by lim. On
// any error, what this call created is removed again, dir included if this
// call made it (a file it replaced stays replaced), and the error names the
// offending entry, quoted.
func ExtractTar(ctx context.Context, r io.Reader, dir, base string, lim CopyLimits) (err error) {
	if err := CheckBase(base); err != nil {
		return err
	}
	made := missingDirs(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			for _, d := range made { // deepest first; only if left empty
				_ = os.Remove(d)
			}
		}
	}()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer root.Close()
	x := &extractor{root: root, base: base, lim: lim.WithDefaults(), files: map[string]bool{}, dirIndex: map[string]int{}}
	defer func() {
		if err != nil {
			x.undo()
		}
	}()
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return err
		}
	}
	// Deepest first, after all writes, so setting one does not disturb another.
	for _, d := range slices.Backward(x.dirs) {
		if err := root.Chmod(d.name, d.mode); err != nil {
			return fmt.Errorf("chmod %s: %w", d.name, err)
		}
		if err := root.Chtimes(d.name, d.mtime, d.mtime); err != nil {
			return fmt.Errorf("set times of %s: %w", d.name, err)
		}
	}
	return nil
}

// extractor is one ExtractTar run's state.
type extractor struct {
	root     *os.Root
	base     string
	lim      CopyLimits
	entries  int
	bytes    int64
	created  []string        // in creation order, for undo
	files    map[string]bool // regular files of this archive: hard link targets
	dirs     []newDir        // directories this run made: modes applied last
	dirIndex map[string]int  // name → index in dirs
}

func (x *extractor) addDir(name string, mode fs.FileMode, mtime time.Time) {
	x.dirIndex[name] = len(x.dirs)
	x.dirs = append(x.dirs, newDir{name, mode, mtime})
}

type newDir struct {
	name  string
	mode  fs.FileMode
	mtime time.Time
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil // PAX defaults for later entries, nothing on disk
	}
	x.entries++
	if x.entries > x.lim.MaxEntries {
		return fmt.Errorf("%w: more than %d entries (at %q)", ErrArchiveLimit, x.lim.MaxEntries, hdr.Name)
	}
	name, err := x.entryName(hdr.Name)
	if err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeLink, tar.TypeSymlink, tar.TypeDir:
	default:
		return fmt.Errorf("%w: %q is a %s: only files, directories and links are copied", ErrUnsafeEntry, hdr.Name, typeName(hdr.Typeflag))
	}
	if name == "." {
		return nil // the destination itself, when all of "/" was asked for
	}
	if err := x.parents(name); err != nil {
		return err
	}
	perm := hdr.FileInfo().Mode().Perm() // set-uid, set-gid and sticky dropped
	switch hdr.Typeflag {
	case tar.TypeDir:
		fi, err := x.root.Lstat(name)
		if err == nil && fi.IsDir() {
			if i, ok := x.dirIndex[name]; ok { // made by this run as a parent
				x.dirs[i].mode, x.dirs[i].mtime = perm, hdr.ModTime
			}
			return nil // an existing directory keeps its mode
		}
		if err := x.removeNonDir(name); err != nil {
			return err
		}
		if err := x.root.Mkdir(name, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", name, err)
		}
		x.created = append(x.created, name)
		x.addDir(name, perm, hdr.ModTime)
	case tar.TypeReg:
		if hdr.Size < 0 || hdr.Size > x.lim.MaxBytes-x.bytes {
			return fmt.Errorf("%w: %q (%d bytes) takes the archive over %d bytes", ErrArchiveLimit, hdr.Name, hdr.Size, x.lim.MaxBytes)
		}
		x.bytes += hdr.Size
		if err := x.removeNonDir(name); err != nil {
			return err
		}
		f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("create %s: %w", name, err)
		}
		x.created = append(x.created, name)
		_, err = io.CopyN(f, r, hdr.Size)
		if err == nil {
			err = f.Chmod(perm)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		if err := x.root.Chtimes(name, hdr.ModTime, hdr.ModTime); err != nil {
			return fmt.Errorf("set times of %s: %w", name, err)
		}
		x.files[name] = true
	case tar.TypeSymlink:
		if err := x.removeNonDir(name); err != nil {
			return err
		}
		// The target is stored as is: a link is never followed here.
		if err := x.root.Symlink(hdr.Linkname, name); err != nil {
			return fmt.Errorf("create symlink %s: %w", name, err)
		}
		x.created = append(x.created, name)
		delete(x.files, name)
	case tar.TypeLink:
		target, err := x.entryName(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hard link %q: %w", hdr.Name, err)
		}
		if !x.files[target] {
			return fmt.Errorf("%w: hard link %q points at %q, which is not a file of this archive", ErrUnsafePath, hdr.Name, hdr.Linkname)
		}
		if err := x.removeNonDir(name); err != nil {
			return err
		}
		if err := x.root.Link(target, name); err != nil {
			return fmt.Errorf("create hard link %s: %w", name, err)
		}
		x.created = append(x.created, name)
		x.files[name] = true
	}
	return nil
}

// entryName cleans a tar entry name and checks it is base or beneath it,
// with no ".." element at all (WriteTar never writes one).
func (x *extractor) entryName(raw string) (string, error) {
	if len(raw) > MaxEntryName {
		return "", fmt.Errorf("%w: a name of %d bytes (at most %d): %.64q…", ErrUnsafePath, len(raw), MaxEntryName, raw)
	}
	if raw == "" || strings.ContainsRune(raw, 0) || path.IsAbs(raw) || strings.HasPrefix(raw, `\`) {
		return "", fmt.Errorf("%w: %q is empty or absolute", ErrUnsafePath, raw)
	}
	if slices.Contains(strings.Split(raw, "/"), "..") {
		return "", fmt.Errorf("%w: %q contains \"..\"", ErrUnsafePath, raw)
	}
	clean := path.Clean(raw)
	if x.base == "." || clean == x.base || strings.HasPrefix(clean, x.base+"/") {
		return clean, nil
	}
	return "", fmt.Errorf("%w: %q is not %q, the only name asked for, nor beneath it", ErrUnsafePath, raw, x.base)
}

// parents makes sure every directory above name is a real directory
// (never a symlink, which os.Root would follow inside dir), creating the
// missing ones.
func (x *extractor) parents(name string) error {
	elems := strings.Split(name, "/")
	for i := 1; i < len(elems); i++ {
		p := strings.Join(elems[:i], "/")
		fi, err := x.root.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// Implied directories count as entries: one deep name must
			// not make a million of them.
			x.entries++
			if x.entries > x.lim.MaxEntries {
				return fmt.Errorf("%w: more than %d entries (at %q)", ErrArchiveLimit, x.lim.MaxEntries, name)
			}
			if err := x.root.Mkdir(p, 0o700); err != nil {
				return fmt.Errorf("create %s: %w", p, err)
			}
			x.created = append(x.created, p)
			x.addDir(p, 0o755, time.Now())
		case err != nil:
			return fmt.Errorf("inspect %s: %w", p, err)
		case !fi.IsDir():
			return fmt.Errorf("%w: %q would be written through %q, which is not a directory (links are never followed)", ErrUnsafePath, name, p)
		}
	}
	return nil
}

// removeNonDir clears name for a new file or link; an existing directory is
// an error rather than something to delete recursively.
func (x *extractor) removeNonDir(name string) error {
	fi, err := x.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect %s: %w", name, err)
	}
	if fi.IsDir() {
		return fmt.Errorf("replace directory %s with a file: %w", name, fs.ErrExist)
	}
	if err := x.root.Remove(name); err != nil {
		return fmt.Errorf("replace %s: %w", name, err)
	}
	return nil
}

// undo removes, newest first, what this run created; directories only
// when empty (one that held something before is not this run's).
func (x *extractor) undo() {
	for _, name := range slices.Backward(x.created) {
		_ = x.root.Remove(name)
	}
}

// missingDirs lists dir and those of its parents that do not exist yet,
// deepest first: what MkdirAll(dir) is about to make.
func missingDirs(dir string) []string {
	var out []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); !errors.Is(err, fs.ErrNotExist) {
			return out
		}
		out = append(out, d)
		if filepath.Dir(d) == d {
			return out
		}
	}
}

// CheckBase accepts one path element, or "." for a copy of "/".
func CheckBase(base string) error {
	if base == "." {
		return nil
	}
	if base == "" || base == ".." || strings.ContainsAny(base, "/\x00") {
		return fmt.Errorf("%w: the name to copy %q is not a single file name", ErrUnsafePath, base)
	}
	return nil
}

// BaseName is the name WriteTar gives guestPath's entries, the one name
// ExtractTar then accepts.
func BaseName(p string) string {
	p = path.Clean(p)
	if p == "/" {
		return "."
	}
	return path.Base(p)
}

func typeName(t byte) string {
	switch t {
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "fifo"
	default:
		return fmt.Sprintf("entry of type %q", t)
	}
}
