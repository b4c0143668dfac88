package debarchive

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/blakesmith/ar"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// maxExtract caps the bytes one package may unpack to (decompression bombs).
const maxExtract = 8 << 30

// ExtractDeb unpacks the data archive of the .deb at debPath into destDir.
// filter, when not nil, is called with each entry's clean relative path
// ("boot/vmlinuz-6.1.0-41-cloud-amd64") and decides whether it is written;
// parent directories of accepted entries are created as needed. Entries
// are written through an os.Root: names with ".." or absolute names are
// refused, symlinks may not point outside destDir (absolute targets are
// rewritten relative to destDir, as if it were the system root), and only
// regular files, directories, symlinks and hard links are created.
func ExtractDeb(debPath, destDir string, filter func(name string) bool) error {
	f, err := os.Open(debPath)
	if err != nil {
		return fmt.Errorf("extract %s: %w", debPath, err)
	}
	defer f.Close()
	r := ar.NewReader(f)
	for {
		hdr, err := r.Next()
		if err == io.EOF {
			return fmt.Errorf("extract %s: no data.tar member", debPath)
		}
		if err != nil {
			return fmt.Errorf("extract %s: read ar: %w", debPath, err)
		}
		name := strings.TrimSuffix(strings.TrimSpace(hdr.Name), "/")
		if !strings.HasPrefix(name, "data.tar") {
			continue
		}
		dr, closeFn, err := decompressor(name, io.LimitReader(r, hdr.Size))
		if err != nil {
			return fmt.Errorf("extract %s: %w", debPath, err)
		}
		defer closeFn()
		if err := extractTar(dr, destDir, filter); err != nil {
			return fmt.Errorf("extract %s: %w", debPath, err)
		}
		return nil
	}
}

func decompressor(name string, r io.Reader) (io.Reader, func(), error) {
	switch path.Ext(name) {
	case ".xz":
		x, err := xz.NewReader(bufio.NewReader(r))
		return x, func() {}, err
	case ".zst":
		z, err := zstd.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return z, z.Close, nil
	case ".gz":
		g, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return g, func() { g.Close() }, nil
	case ".tar":
		return r, func() {}, nil
	}
	return nil, nil, fmt.Errorf("unsupported data member %q", name)
}

// cleanEntry turns a tar name into a clean relative path, refusing any
// that would climb out of the root.
func cleanEntry(name string) (string, error) {
	n := strings.TrimPrefix(name, "./")
	n = strings.TrimSuffix(n, "/")
	if n == "" || n == "." {
		return "", nil // the root itself
	}
	if strings.HasPrefix(n, "/") || strings.Contains(n, "\\") {
		return "", fmt.Errorf("%q: %w", name, ErrUnsafePath)
	}
	for _, part := range strings.Split(n, "/") {
		if part == ".." || part == "" {
			return "", fmt.Errorf("%q: %w", name, ErrUnsafePath)
		}
	}
	return path.Clean(n), nil
}

// linkTarget checks a symlink target from an entry at name, returning a
// target that stays inside the root.
func linkTarget(name, target string) (string, error) {
	if strings.HasPrefix(target, "/") {
		// Absolute targets mean the installed system's root: rewrite them
		// relative to the link so they resolve inside destDir.
		rel := strings.Repeat("../", strings.Count(name, "/"))
		t := path.Clean(rel + strings.TrimPrefix(path.Clean(target), "/"))
		return t, nil
	}
	joined := path.Join(path.Dir(name), target)
	if joined == ".." || strings.HasPrefix(joined, "../") {
		return "", fmt.Errorf("symlink %q -> %q: %w", name, target, ErrUnsafePath)
	}
	return target, nil
}

func extractTar(r io.Reader, destDir string, filter func(string) bool) error {
	if err := os.MkdirAll(destDir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(destDir)
	if err != nil {
		return err
	}
	defer root.Close()
	var total int64
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read data tar: %w", err)
		}
		name, err := cleanEntry(hdr.Name)
		if err != nil {
			return err
		}
		if name == "" || (filter != nil && !filter(name)) {
			continue
		}
		if dir := path.Dir(name); dir != "." {
			if err := root.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("create parent of %s: %w", name, err)
			}
		}
		mode := fs.FileMode(hdr.Mode) & 0o777 // never setuid/setgid/sticky
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, mode|0o700); err != nil {
				return fmt.Errorf("create dir %s: %w", name, err)
			}
		case tar.TypeReg:
			total += hdr.Size
			if total > maxExtract {
				return fmt.Errorf("package unpacks to more than %d bytes", int64(maxExtract))
			}
			if err := writeFile(root, name, mode, tr, hdr.Size); err != nil {
				return err
			}
		case tar.TypeSymlink:
			target, err := linkTarget(name, hdr.Linkname)
			if err != nil {
				return err
			}
			root.Remove(name)
			if err := root.Symlink(target, name); err != nil {
				return fmt.Errorf("create symlink %s: %w", name, err)
			}
		case tar.TypeLink:
			target, err := cleanEntry(hdr.Linkname)
			if err != nil || target == "" {
				return fmt.Errorf("hard link %s -> %q: %w", name, hdr.Linkname, ErrUnsafePath)
			}
			root.Remove(name)
			if err := root.Link(target, name); err != nil {
				return fmt.Errorf("create hard link %s: %w", name, err)
			}
		default:
			// Devices, fifos and the like have no place in a kernel store.
			continue
		}
	}
}

func writeFile(root *os.Root, name string, mode fs.FileMode, r io.Reader, size int64) error {
	root.Remove(name) // replace, never write through an existing symlink
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode|0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	n, err := io.Copy(f, io.LimitReader(r, size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, errors.Join(err))
	}
	return nil
}
