package vmm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// tailWindow bounds how much of a log TailFile reads.
const tailWindow = 256 << 10

// TailFile returns the last n lines of the file at path (reading at most its
// last 256 KiB). A missing file gives "" and no error.
func TailFile(path string, n int) (string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("stat %s: %w", path, err)
	}
	off := max(st.Size()-tailWindow, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // the first line is probably cut
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n"), nil
}

// TrimConsole bounds a console log that a VMM appends to (O_APPEND): when it
// is over maxBytes it keeps roughly the newest half, cut at a line start.
// Appending writers tolerate the truncation (their next write lands at the
// new end); output written during the trim itself may be lost, which is
// acceptable for a console log. It reports whether it trimmed.
func TrimConsole(path string, maxBytes int64) (bool, error) {
	if maxBytes <= 0 {
		return false, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open console log %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("stat console log %s: %w", path, err)
	}
	if st.Size() <= maxBytes {
		return false, nil
	}
	keep := maxBytes / 2
	tail := make([]byte, keep)
	if _, err := f.ReadAt(tail, st.Size()-keep); err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read console log %s: %w", path, err)
	}
	if i := bytes.IndexByte(tail, '\n'); i >= 0 && i < len(tail)-1 {
		tail = tail[i+1:]
	}
	if _, err := f.WriteAt(tail, 0); err != nil {
		return false, fmt.Errorf("rewrite console log %s: %w", path, err)
	}
	if err := f.Truncate(int64(len(tail))); err != nil {
		return false, fmt.Errorf("truncate console log %s: %w", path, err)
	}
	return true, nil
}
