package vsockagent

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

// ErrUnsafePath reports a tar entry that would land outside the target.
var ErrUnsafePath = errors.New("unsafe path in archive")

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

// ExtractTar unpacks a tar stream into dir (created if missing). Every
// write goes through an os.Root, so no entry (or symlink planted by an
// earlier entry) can reach outside dir; names with ".." or a leading "/"
// are refused. Modes and mtimes are applied; ownership is not (files belong
// to the extracting user). Devices and fifos are skipped.
func ExtractTar(ctx context.Context, r io.Reader, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer root.Close()
	type dirTimes struct {
		name  string
		mode  fs.FileMode
		mtime time.Time
	}
	var dirs []dirTimes
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
		name, err := safeName(hdr.Name)
		if err != nil {
			return err
		}
		if name == "." {
			continue
		}
		if d := path.Dir(name); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("create %s: %w", d, err)
			}
		}
		mode := hdr.FileInfo().Mode()
		switch hdr.Typeflag {
		case tar.TypeDir:
			if fi, err := root.Lstat(name); err == nil && !fi.IsDir() {
				if err := root.Remove(name); err != nil {
					return fmt.Errorf("replace %s: %w", name, err)
				}
			}
			if err := root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("create %s: %w", name, err)
			}
			dirs = append(dirs, dirTimes{name, mode, hdr.ModTime})
		case tar.TypeReg:
			if err := extractFile(root, name, tr, mode, hdr.ModTime); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := removeNonDir(root, name); err != nil {
				return err
			}
			// The target is stored as is: a link is never followed here.
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return fmt.Errorf("create symlink %s: %w", name, err)
			}
		case tar.TypeLink:
			target, err := safeName(hdr.Linkname)
			if err != nil {
				return err
			}
			if err := removeNonDir(root, name); err != nil {
				return err
			}
			if err := root.Link(target, name); err != nil {
				return fmt.Errorf("create hard link %s: %w", name, err)
			}
		default:
			// devices, fifos, PAX/GNU metadata the reader already applied
		}
	}
	// Deepest first, after all writes, so setting one does not disturb another.
	for _, d := range slices.Backward(dirs) {
		if err := root.Chmod(d.name, d.mode.Perm()|d.mode&(fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return fmt.Errorf("chmod %s: %w", d.name, err)
		}
		if err := root.Chtimes(d.name, d.mtime, d.mtime); err != nil {
			return fmt.Errorf("set times of %s: %w", d.name, err)
		}
	}
	return nil
}

func extractFile(root *os.Root, name string, r io.Reader, mode fs.FileMode, mtime time.Time) error {
	if err := removeNonDir(root, name); err != nil {
		return err
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	if _, err := io.Copy(f, r); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Chmod(mode.Perm() | mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
		_ = f.Close()
		return fmt.Errorf("chmod %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := root.Chtimes(name, mtime, mtime); err != nil {
		return fmt.Errorf("set times of %s: %w", name, err)
	}
	return nil
}

// removeNonDir clears name for a new file or link; an existing directory is
// an error rather than something to delete recursively.
func removeNonDir(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect %s: %w", name, err)
	}
	if fi.IsDir() {
		return fmt.Errorf("replace directory %s with a file: %w", name, fs.ErrExist)
	}
	if err := root.Remove(name); err != nil {
		return fmt.Errorf("replace %s: %w", name, err)
	}
	return nil
}

// safeName cleans a tar entry name and refuses absolute or escaping ones.
func safeName(name string) (string, error) {
	if strings.ContainsRune(name, 0) || path.IsAbs(name) || strings.HasPrefix(name, `\`) {
		return "", fmt.Errorf("%w: %q", ErrUnsafePath, name)
	}
	clean := path.Clean(name)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("%w: %q", ErrUnsafePath, name)
	}
	return clean, nil
}
