package updater

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"syscall"
)

// Binary names: exactly these four entries make a release tarball.
const (
	BangerName  = "banger"
	BangerdName = "bangerd"
	AgentName   = "banger-vsock-agent"
	HelperName  = "banger-helper"
)

// ReleaseEntries is the exact entry set of a release tarball.
var ReleaseEntries = []string{BangerName, BangerdName, AgentName, HelperName}

// Caps on what a tarball may unpack to.
const (
	maxEntryBytes = 256 << 20
	maxTotalBytes = 512 << 20
)

// ErrBadTarball reports a release tarball that is not exactly the four
// banger binaries as regular files.
var ErrBadTarball = errors.New("invalid release tarball")

// StagedRelease is a release unpacked into the staging directory, ready to
// be checked and swapped in.
type StagedRelease struct {
	Dir     string // the directory holding the four binaries
	Banger  string
	Bangerd string
	Agent   string
	Helper  string
}

// StageTarball unpacks the verified tarball into destDir/release. The entry
// set must be exactly {banger, bangerd, banger-vsock-agent, banger-helper}: plain names, each
// once, regular files, within the size caps. Files are written at 0755
// whatever the tarball claims. On error nothing is left in destDir/release.
func StageTarball(tarball, destDir string) (sr StagedRelease, err error) {
	f, err := os.Open(tarball)
	if err != nil {
		return StagedRelease{}, fmt.Errorf("stage release: %w", err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return StagedRelease{}, fmt.Errorf("stage release: %w: %w", ErrBadTarball, err)
	}
	defer gz.Close()

	dir := filepath.Join(destDir, "release")
	if err := os.RemoveAll(dir); err != nil {
		return StagedRelease{}, fmt.Errorf("stage release: clear %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return StagedRelease{}, fmt.Errorf("stage release: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()

	wanted := map[string]bool{}
	for _, n := range ReleaseEntries {
		wanted[n] = true
	}
	seen := map[string]bool{}
	var total int64
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return StagedRelease{}, fmt.Errorf("stage release: %w: %w", ErrBadTarball, err)
		}
		name := hdr.Name
		switch {
		case !wanted[name]:
			return StagedRelease{}, fmt.Errorf("stage release: %w: unexpected entry %q", ErrBadTarball, name)
		case seen[name]:
			return StagedRelease{}, fmt.Errorf("stage release: %w: entry %q appears twice", ErrBadTarball, name)
		case hdr.Typeflag != tar.TypeReg:
			return StagedRelease{}, fmt.Errorf("stage release: %w: entry %q is not a regular file", ErrBadTarball, name)
		case hdr.Size < 0 || hdr.Size > maxEntryBytes:
			return StagedRelease{}, fmt.Errorf("stage release: %w: entry %q has size %d (cap %d)", ErrBadTarball, name, hdr.Size, maxEntryBytes)
		}
		seen[name] = true
		total += hdr.Size
		if total > maxTotalBytes {
			return StagedRelease{}, fmt.Errorf("stage release: %w: more than %d bytes unpacked", ErrBadTarball, maxTotalBytes)
		}
		if err := extractFile(tr, filepath.Join(dir, name), hdr.Size); err != nil {
			return StagedRelease{}, fmt.Errorf("stage release: %s: %w", name, err)
		}
	}
	var missing []string
	for _, n := range ReleaseEntries {
		if !seen[n] {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return StagedRelease{}, fmt.Errorf("stage release: %w: missing %v", ErrBadTarball, missing)
	}
	return StagedRelease{
		Dir:     dir,
		Banger:  filepath.Join(dir, BangerName),
		Bangerd: filepath.Join(dir, BangerdName),
		Agent:   filepath.Join(dir, AgentName),
		Helper:  filepath.Join(dir, HelperName),
	}, nil
}

// extractFile writes exactly size bytes from r to a new file at path, 0755.
func extractFile(r io.Reader, path string, size int64) error {
	out, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|syscall.O_NOFOLLOW, 0o700)
	if err != nil {
		return err
	}
	n, err := io.Copy(out, io.LimitReader(r, size))
	if err == nil && n != size {
		err = fmt.Errorf("%w: entry ended after %d of %d bytes", ErrBadTarball, n, size)
	}
	if err == nil {
		err = out.Chmod(0o755)
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
