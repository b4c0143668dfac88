// Package vmdisk makes a VM's root disk from an image: a reflink clone where
// the filesystem allows it, else a sparse copy that skips the image's holes.
package vmdisk

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Clone copies src to dst (which must not exist) as cheaply as the
// filesystem allows. It reports whether a reflink was used. On failure dst
// is removed.
func Clone(src, dst string) (reflinked bool, err error) {
	in, err := os.Open(src)
	if err != nil {
		return false, fmt.Errorf("open image %s: %w", src, err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return false, fmt.Errorf("stat image %s: %w", src, err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return false, fmt.Errorf("create disk %s: %w", dst, err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close disk %s: %w", dst, cerr)
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err == nil {
		return true, nil
	}
	if err := sparseCopy(in, out, st.Size()); err != nil {
		return false, fmt.Errorf("copy image %s to %s: %w", src, dst, err)
	}
	return false, nil
}

// sparseCopy copies only the data extents of in (SEEK_DATA/SEEK_HOLE), so
// a mostly empty ext4 image stays mostly unallocated.
func sparseCopy(in, out *os.File, size int64) error {
	if err := out.Truncate(size); err != nil {
		return err
	}
	fd := int(in.Fd())
	buf := make([]byte, 1<<20)
	var off int64
	for off < size {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, unix.ENXIO) { // no more data
				return nil
			}
			return fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		if _, err := in.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := out.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := io.CopyBuffer(out, io.LimitReader(in, hole-data), buf); err != nil {
			return err
		}
		off = hole
	}
	return nil
}
