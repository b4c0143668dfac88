package imagecat

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/bangerdev/banger/internal/ext4"
	"github.com/bangerdev/banger/internal/flatten"
	"github.com/bangerdev/banger/internal/opid"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/vmdisk"
)

// ImportOptions tunes Import.
type ImportOptions struct {
	// WorkDir holds the extracted tree of a tar source (os.TempDir() when
	// empty).
	WorkDir  string
	Owner    *Owner // hand the image to this uid/gid
	Logger   *slog.Logger
	Progress progress.Func
}

// Import stages.
const (
	StageExtract = "extract"
	StageCopy    = "copy"
	StageCheck   = "check"
)

// ext4MagicOffset is where the superblock's s_magic (0xEF53, little
// endian) sits: superblock at 1024 + field offset 0x38.
const ext4MagicOffset = 1080

// Import makes image name at out from src: a rootfs directory (ownership
// as found on disk), a tar, optionally gzip/zstd/xz compressed (extracted
// safely with internal/flatten; ownership from the tar, also when not
// root), or an ext4 file (copied sparsely, then checked with e2fsck -n).
// out appears atomically and only on success; the work dir never outlives
// the call.
func Import(ctx context.Context, name, src, out string, opts ImportOptions) (Result, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := ValidateName(name); err != nil {
		return Result{}, err
	}
	abs, err := filepath.Abs(src)
	if err != nil {
		return Result{}, fmt.Errorf("import image %q: %w", name, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return Result{}, fmt.Errorf("import image %q: %w", name, err)
	}
	tmp, err := tempBeside(out)
	if err != nil {
		return Result{}, fmt.Errorf("import image %q: %w", name, err)
	}
	defer os.Remove(tmp) // no-op once published

	var source string
	switch {
	case fi.IsDir():
		source = "import:dir:" + abs
		opts.Progress.Stage(StageMkfs, "make ext4 image from "+abs)
		if _, err := ext4.Make(ctx, abs, tmp, ext4.Options{Label: "rootfs", Logger: log}); err != nil {
			return Result{}, fmt.Errorf("import image %q from directory: %w", name, err)
		}
	case fi.Mode().IsRegular():
		isExt4, err := hasExt4Magic(abs)
		if err != nil {
			return Result{}, fmt.Errorf("import image %q: %w", name, err)
		}
		if isExt4 {
			source = "import:ext4:" + abs
			if err := importExt4(ctx, abs, tmp, opts.Progress); err != nil {
				return Result{}, fmt.Errorf("import image %q from ext4 file: %w", name, err)
			}
		} else {
			source = "import:tar:" + abs
			if err := importTar(ctx, abs, tmp, opts, log); err != nil {
				return Result{}, fmt.Errorf("import image %q from tar: %w", name, err)
			}
		}
	default:
		return Result{}, fmt.Errorf("import image %q: %w: %s is neither a directory nor a regular file", name, ErrBadSource, abs)
	}

	opts.Progress.Stage(StageDigest, "hash image")
	res, err := finish(name, source, tmp)
	if err != nil {
		return Result{}, fmt.Errorf("import image %q: %w", name, err)
	}
	if err := publish(tmp, out, opts.Owner); err != nil {
		return Result{}, fmt.Errorf("import image %q: publish %s: %w", name, out, err)
	}
	res.Path, _ = filepath.Abs(out)
	log.InfoContext(ctx, "image imported", "image", name, "source", source, "bytes", res.SizeBytes, "digest", res.Digest)
	return res, nil
}

// hasExt4Magic reports whether the file carries the ext2/3/4 superblock
// magic.
func hasExt4Magic(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var m [2]byte
	if _, err := f.ReadAt(m[:], ext4MagicOffset); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil // too short to be a filesystem
		}
		return false, fmt.Errorf("read %s: %w", p, err)
	}
	return m[0] == 0x53 && m[1] == 0xEF, nil
}

// importExt4 copies first and checks the copy, so src cannot change
// between the check and the use.
func importExt4(ctx context.Context, src, tmp string, report progress.Func) error {
	report.Stage(StageCopy, "copy "+src)
	if _, err := vmdisk.Clone(src, tmp); err != nil {
		return err
	}
	report.Stage(StageCheck, "e2fsck -n")
	return CheckExt4(ctx, tmp)
}

// CheckExt4 runs a forced read-only e2fsck; anything but a clean result is
// ErrCorruptImage.
func CheckExt4(ctx context.Context, p string) error {
	out, err := exec.CommandContext(ctx, "e2fsck", "-n", "-f", p).CombinedOutput()
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ctx.Err() == nil {
		return fmt.Errorf("%w: e2fsck -n exited %d: %s", ErrCorruptImage, ee.ExitCode(), lastLines(string(out), 8))
	}
	return fmt.Errorf("check %s: %w", p, err)
}

func importTar(ctx context.Context, src, tmp string, opts ImportOptions, log *slog.Logger) (err error) {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	r, closeFn, err := decompress(bufio.NewReaderSize(f, 1<<16))
	if err != nil {
		return err
	}
	defer closeFn()
	br := bufio.NewReaderSize(r, 1<<16)
	if hdr, _ := br.Peek(512); len(hdr) < 512 || !bytes.Equal(hdr[257:262], []byte("ustar")) {
		return fmt.Errorf("%w: %s is not a directory, an ext4 image or a (gzip/zstd/xz) tar", ErrBadSource, src)
	}

	work, err := makeWorkDir(opts.WorkDir, "banger-import-")
	if err != nil {
		return fmt.Errorf("create work dir: %w", err)
	}
	defer func() {
		if rerr := removeWorkDir(work); rerr != nil {
			log.ErrorContext(ctx, "remove import work dir", "dir", work, "err", rerr)
			err = errors.Join(err, rerr)
		}
	}()
	rootfs := filepath.Join(work, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return err
	}
	opts.Progress.Stage(StageExtract, "extract "+src)
	ap, err := flatten.New(rootfs, flatten.Options{Logger: opid.Logger(ctx, log), RecordOwnership: os.Geteuid() != 0})
	if err != nil {
		return err
	}
	if err := ap.Apply(ctx, br); err != nil {
		ap.Close()
		return err
	}
	fr, err := ap.Finish()
	if err != nil {
		return err
	}
	mo := ext4.Options{Label: "rootfs", Logger: log}
	for _, a := range fr.Attrs {
		mo.Overrides = append(mo.Overrides, ext4.Override{Path: a.Path, UID: a.UID, GID: a.GID, Mode: a.Mode, Xattrs: a.Xattrs})
	}
	for _, s := range fr.Skipped {
		if s.Mode&0o170000 == 0 {
			continue // an unsupported entry type, not a node
		}
		mo.Nodes = append(mo.Nodes, ext4.Node{Path: s.Path, Mode: s.Mode, UID: s.UID, GID: s.GID, Major: s.Major, Minor: s.Minor})
	}
	opts.Progress.Stage(StageMkfs, "make ext4 image")
	if _, err := ext4.Make(ctx, rootfs, tmp, mo); err != nil {
		return err
	}
	return nil
}

// decompress sniffs gzip, zstd and xz magic and returns a plain stream.
func decompress(br *bufio.Reader) (io.Reader, func(), error) {
	magic, _ := br.Peek(6)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("open gzip: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxWindow(1<<27))
		if err != nil {
			return nil, nil, fmt.Errorf("open zstd: %w", err)
		}
		return zr, zr.Close, nil
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		zr, err := xz.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("open xz: %w", err)
		}
		return zr, func() {}, nil
	}
	return br, func() {}, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
