// Package ext4 turns a root directory into an ext4 image with e2fsprogs
// (mkfs.ext4 -d, debugfs) and grows images for per-VM disks. It never
// mounts anything, so it works for a rootless daemon: ownership, modes,
// xattrs and device nodes the extractor could not apply on disk are written
// into the image afterwards with one debugfs run.
package ext4

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

const (
	blockSize = 4096
	inodeSize = 256
	// MinSize is the smallest image Make builds: small enough to stay cheap,
	// large enough for a journal and a little room to write.
	MinSize = 64 << 20
	// headroom added on top of the measured content: 20% plus this.
	headroomFixed = 64 << 20
)

// ErrShrink is returned by Grow when asked to make an image smaller.
var ErrShrink = errors.New("ext4 images cannot shrink")

// Override is the ownership, full st_mode (type and permission bits) and
// xattrs one path must have in the image, whatever the source tree says.
type Override struct {
	Path   string // absolute within the image
	UID    int
	GID    int
	Mode   uint32
	Xattrs map[string][]byte
}

// Node is a device node or fifo to create in the image (extractors skip
// them: creating one on the host needs privilege). Mode includes the type.
type Node struct {
	Path         string
	Mode         uint32
	UID, GID     int
	Major, Minor int64
}

// Options tunes Make. The zero value builds an image sized to the content.
type Options struct {
	Overrides []Override
	Nodes     []Node
	Label     string
	// Size, when not 0, is the image size in bytes (rounded up to 4 KiB);
	// Make fails if the content does not fit.
	Size   int64
	Logger *slog.Logger
}

// Usage is what a tree occupies on ext4, counted du-style.
type Usage struct {
	Bytes  int64 // data blocks, in bytes
	Inodes int64
}

// MeasureTree walks dir without following symlinks and counts the blocks
// and inodes its copy will need (hardlinked files once).
func MeasureTree(dir string) (Usage, error) {
	var u Usage
	seen := map[uint64]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st, _ := info.Sys().(*syscall.Stat_t)
		if st != nil && st.Nlink > 1 && !info.IsDir() {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		u.Inodes++
		switch {
		case info.Mode().IsRegular():
			u.Bytes += roundUp(info.Size(), blockSize)
			// An extent tree block per ~340 extents of a fragmented file.
			u.Bytes += roundUp(info.Size()/(340*128<<10), 1) * blockSize
		case info.IsDir():
			u.Bytes += max(roundUp(info.Size(), blockSize), blockSize)
		case info.Mode()&fs.ModeSymlink != 0 && info.Size() >= 60:
			u.Bytes += blockSize
		}
		return nil
	})
	if err != nil {
		return Usage{}, fmt.Errorf("measure %q: %w", dir, err)
	}
	return u, nil
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// sizeFor picks the image size and inode count for content u.
func sizeFor(u Usage) (size, inodes int64) {
	inodes = u.Inodes + u.Inodes/4 + 1024
	size = u.Bytes + u.Bytes/5 + headroomFixed + inodes*inodeSize
	size = max(roundUp(size, 4<<20), MinSize)
	// Keep mke2fs's default ratio (one inode per 16 KiB) when it gives more,
	// so an image grown later still gets inodes in proportion.
	inodes = max(inodes, size/16384)
	return size, inodes
}

// Make builds dst from srcDir: mkfs.ext4 -d into a temporary file beside
// dst, then overrides and nodes via debugfs, then a rename. On failure
// nothing is left at dst or beside it. It returns the image size.
func Make(ctx context.Context, srcDir, dst string, opts Options) (int64, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u, err := MeasureTree(srcDir)
	if err != nil {
		return 0, err
	}
	size, inodes := sizeFor(u)
	if opts.Size > 0 {
		size = roundUp(opts.Size, blockSize)
	}
	valueDir, err := os.MkdirTemp("", "banger-ext4-")
	if err != nil {
		return 0, fmt.Errorf("build image %q: %w", dst, err)
	}
	defer os.RemoveAll(valueDir)
	script, err := debugfsScript(valueDir, opts.Overrides, opts.Nodes)
	if err != nil {
		return 0, fmt.Errorf("build image %q: %w", dst, err)
	}

	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return 0, fmt.Errorf("build image %q: %w", dst, err)
	}
	tmpPath := tmp.Name()
	tmp.Close()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmpPath)
		}
	}()

	args := []string{"-q", "-F", "-t", "ext4", "-b", strconv.Itoa(blockSize), "-I", strconv.Itoa(inodeSize),
		"-N", strconv.FormatInt(inodes, 10), "-E", "root_owner=0:0", "-d", srcDir}
	if opts.Label != "" {
		args = append(args, "-L", opts.Label)
	}
	args = append(args, tmpPath, strconv.FormatInt(size/1024, 10)+"k")
	log.DebugContext(ctx, "mkfs.ext4", "src", srcDir, "size", size, "inodes", inodes, "content_bytes", u.Bytes)
	if err := run(ctx, "mkfs.ext4", args...); err != nil {
		return 0, fmt.Errorf("build image %q (content %d bytes, %d inodes, image %d bytes): %w", dst, u.Bytes, u.Inodes, size, err)
	}
	if len(script) > 0 {
		if err := Debugfs(ctx, tmpPath, script); err != nil {
			return 0, fmt.Errorf("apply ownership to image %q: %w", dst, err)
		}
	}
	if err := syncFile(tmpPath); err != nil {
		return 0, fmt.Errorf("build image %q: %w", dst, err)
	}
	if err := os.Rename(tmpPath, dst); err != nil {
		return 0, fmt.Errorf("build image %q: %w", dst, err)
	}
	ok = true
	return size, nil
}

func syncFile(p string) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// quote makes p one debugfs argument: double quotes, inner quotes doubled.
// debugfs reads its script line by line, so a newline cannot be expressed.
func quote(p string) (string, error) {
	if strings.ContainsAny(p, "\n\r\x00") {
		return "", fmt.Errorf("path %q cannot be passed to debugfs", p)
	}
	return `"` + strings.ReplaceAll(p, `"`, `""`) + `"`, nil
}

// debugfsScript writes the commands that create nodes and apply overrides.
// Xattr values are binary (security.capability), so each goes into a file
// under valueDir that ea_set -f reads.
func debugfsScript(valueDir string, overrides []Override, nodes []Node) ([]byte, error) {
	var b bytes.Buffer
	for _, n := range nodes {
		q, err := quote(n.Path)
		if err != nil {
			return nil, err
		}
		var kind string
		switch n.Mode & syscall.S_IFMT {
		case syscall.S_IFIFO:
			kind = "p"
		case syscall.S_IFCHR:
			kind = fmt.Sprintf("c %d %d", n.Major, n.Minor)
		case syscall.S_IFBLK:
			kind = fmt.Sprintf("b %d %d", n.Major, n.Minor)
		default:
			return nil, fmt.Errorf("node %q: mode %o is not a device or fifo", n.Path, n.Mode)
		}
		// debugfs's mknod links its argument verbatim into the current
		// directory, so step into the parent first.
		dir, base := filepath.Split(n.Path)
		qd, err := quote(filepath.Clean("/" + dir))
		if err != nil {
			return nil, err
		}
		qb, err := quote(base)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "cd %s\nmknod %s %s\ncd /\n", qd, qb, kind)
		fmt.Fprintf(&b, "set_inode_field %s mode 0%o\nset_inode_field %s uid %d\nset_inode_field %s gid %d\n", q, n.Mode, q, n.UID, q, n.GID)
	}
	values := 0
	for _, o := range overrides {
		q, err := quote(o.Path)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "set_inode_field %s uid %d\nset_inode_field %s gid %d\n", q, o.UID, q, o.GID)
		if o.Mode != 0 {
			fmt.Fprintf(&b, "set_inode_field %s mode 0%o\n", q, o.Mode)
		}
		for name, v := range o.Xattrs {
			qn, err := quote(name)
			if err != nil {
				return nil, err
			}
			values++
			vf := filepath.Join(valueDir, fmt.Sprintf("xattr-%d", values))
			if err := os.WriteFile(vf, v, 0o600); err != nil {
				return nil, err
			}
			qv, err := quote(vf)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(&b, "ea_set -f %s %s %s\n", qv, q, qn)
		}
	}
	return b.Bytes(), nil
}

// Debugfs runs a debugfs command script in write mode against image. Any
// error debugfs prints fails the run (debugfs itself exits 0 on them).
func Debugfs(ctx context.Context, image string, script []byte) error {
	f, err := os.CreateTemp("", "banger-debugfs-*.script")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(script)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	_, err = debugfs(ctx, image, true, "-f", f.Name())
	return err
}

// debugfs runs debugfs and turns anything it prints on stderr besides its
// banner into an error.
func debugfs(ctx context.Context, image string, write bool, args ...string) ([]byte, error) {
	full := []string{}
	if write {
		full = append(full, "-w")
	}
	full = append(full, args...)
	full = append(full, image)
	cmd := exec.CommandContext(ctx, "debugfs", full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("debugfs %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	var problems []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "debugfs ") {
			problems = append(problems, l)
		}
	}
	if len(problems) > 0 {
		if len(problems) > 5 {
			problems = append(problems[:5], fmt.Sprintf("(%d more)", len(problems)-5))
		}
		return nil, fmt.Errorf("debugfs %s: %s", strings.Join(args, " "), strings.Join(problems, "; "))
	}
	return stdout.Bytes(), nil
}

func run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Grow enlarges the ext4 image at path to size bytes: extend the file,
// check it (resize2fs insists on a fresh check) and resize the filesystem.
// Growing to the current size does nothing.
func Grow(ctx context.Context, path string, size int64) error {
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("grow image %q: %w", path, err)
	}
	size = roundUp(size, blockSize)
	switch {
	case size < info.Size():
		return fmt.Errorf("grow image %q from %d to %d bytes: %w", path, info.Size(), size, ErrShrink)
	case size == info.Size():
		return nil
	}
	if err := os.Truncate(path, size); err != nil {
		return fmt.Errorf("grow image %q: %w", path, err)
	}
	cmd := exec.CommandContext(ctx, "e2fsck", "-f", "-y", path)
	if out, err := cmd.CombinedOutput(); err != nil {
		// Exit status 1 means errors were corrected; the image is usable.
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			return fmt.Errorf("grow image %q: check: %w: %s", path, err, strings.TrimSpace(string(out)))
		}
	}
	if err := run(ctx, "resize2fs", path); err != nil {
		return fmt.Errorf("grow image %q: %w", path, err)
	}
	return nil
}
