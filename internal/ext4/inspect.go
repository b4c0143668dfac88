package ext4

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Inode is what debugfs reports about one path in an image. It serves
// tests and diagnostics (nothing is mounted).
type Inode struct {
	Ino        uint64
	Type       string // debugfs's word: regular, directory, symlink, character special, FIFO, ...
	Mode       uint32 // permission bits including setuid/setgid/sticky
	UID, GID   int
	Size       int64
	Links      int
	LinkTarget string // for symlinks
}

// Stat describes path inside image.
func Stat(ctx context.Context, image, path string) (*Inode, error) {
	q, err := quote(path)
	if err != nil {
		return nil, err
	}
	out, err := debugfs(ctx, image, false, "-R", "stat "+q)
	if err != nil {
		return nil, fmt.Errorf("stat %q in %q: %w", path, image, err)
	}
	in := &Inode{}
	fields := strings.Fields(strings.NewReplacer(":", " : ").Replace(string(out)))
	get := func(key string) string {
		for i := 0; i+2 < len(fields); i++ {
			if fields[i] == key && fields[i+1] == ":" {
				return fields[i+2]
			}
		}
		return ""
	}
	in.Ino, _ = strconv.ParseUint(get("Inode"), 10, 64)
	mode, _ := strconv.ParseUint(get("Mode"), 8, 32)
	in.Mode = uint32(mode)
	in.UID, _ = strconv.Atoi(get("User"))
	in.GID, _ = strconv.Atoi(get("Group"))
	in.Size, _ = strconv.ParseInt(get("Size"), 10, 64)
	in.Links, _ = strconv.Atoi(get("Links"))
	for _, line := range strings.Split(string(out), "\n") {
		if t, ok := strings.CutPrefix(line, "Inode: "); ok {
			if _, rest, ok := strings.Cut(t, "Type: "); ok {
				in.Type, _, _ = strings.Cut(rest, "  ")
			}
		}
		if t, ok := strings.CutPrefix(line, `Fast link dest: "`); ok {
			in.LinkTarget = strings.TrimSuffix(t, `"`)
		}
	}
	if in.Type == "symlink" && in.LinkTarget == "" {
		b, err := debugfs(ctx, image, false, "-R", "cat "+q)
		if err != nil {
			return nil, fmt.Errorf("read symlink %q in %q: %w", path, image, err)
		}
		in.LinkTarget = string(b)
	}
	if in.Ino == 0 {
		return nil, fmt.Errorf("stat %q in %q: unexpected debugfs output %q", path, image, out)
	}
	return in, nil
}

// ReadFile returns the contents of a regular file inside image.
func ReadFile(ctx context.Context, image, path string) ([]byte, error) {
	q, err := quote(path)
	if err != nil {
		return nil, err
	}
	if _, err := Stat(ctx, image, path); err != nil {
		return nil, err
	}
	out, err := debugfs(ctx, image, false, "-R", "cat "+q)
	if err != nil {
		return nil, fmt.Errorf("read %q in %q: %w", path, image, err)
	}
	return out, nil
}

// Xattr returns the value of extended attribute name on path in image.
func Xattr(ctx context.Context, image, path, name string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "banger-ext4-xattr-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	f := filepath.Join(dir, "value")
	qf, err := quote(f)
	if err != nil {
		return nil, err
	}
	qp, err := quote(path)
	if err != nil {
		return nil, err
	}
	qn, err := quote(name)
	if err != nil {
		return nil, err
	}
	if _, err := debugfs(ctx, image, false, "-R", "ea_get -f "+qf+" "+qp+" "+qn); err != nil {
		return nil, fmt.Errorf("get xattr %s of %q in %q: %w", name, path, image, err)
	}
	return os.ReadFile(f)
}

// DirEntry is one line of a directory listing inside an image.
type DirEntry struct {
	Name     string
	Ino      uint64
	Mode     uint32 // st_mode with type bits
	UID, GID int
}

// List returns the entries of directory dir inside image, without . and ..
func List(ctx context.Context, image, dir string) ([]DirEntry, error) {
	q, err := quote(dir)
	if err != nil {
		return nil, err
	}
	out, err := debugfs(ctx, image, false, "-R", "ls -p "+q)
	if err != nil {
		return nil, fmt.Errorf("list %q in %q: %w", dir, image, err)
	}
	var ents []DirEntry
	for _, line := range strings.Split(string(out), "\n") {
		// /ino/mode/uid/gid/name/size/ — names cannot hold "/".
		f := strings.Split(line, "/")
		if len(f) < 7 || f[0] != "" {
			continue
		}
		var e DirEntry
		e.Ino, _ = strconv.ParseUint(f[1], 10, 64)
		mode, _ := strconv.ParseUint(f[2], 8, 32)
		e.Mode = uint32(mode)
		e.UID, _ = strconv.Atoi(f[3])
		e.GID, _ = strconv.Atoi(f[4])
		e.Name = f[5]
		if e.Name == "." || e.Name == ".." || e.Ino == 0 {
			continue
		}
		ents = append(ents, e)
	}
	return ents, nil
}
