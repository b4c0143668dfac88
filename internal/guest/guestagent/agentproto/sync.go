package agentproto

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
)

// Methods of `vm sync` (see doc.go). Uploads reuse fs.copy_in with the
// name ".", so they get ExtractTar's rules unchanged.
const (
	MethodManifest = "fs.manifest"
	MethodRemove   = "fs.remove"
)

// FrameManifest carries a JSON []ManifestEntry batch (fs.manifest).
const FrameManifest byte = 'm'

// ManifestBatchBytes is where a manifest batch is sent: well under maxFrame.
const ManifestBatchBytes = 256 << 10

// ErrBadManifest reports a manifest entry that breaks the protocol's rules
// (a path that is absolute, has "..", is too long; an unknown type; too many
// entries). The guest sent it, so the whole manifest is refused.
var ErrBadManifest = errors.New("refused manifest from the guest")

// Manifest entry types.
const (
	EntryFile    = "f"
	EntryDir     = "d"
	EntrySymlink = "l"
)

// ManifestEntry describes one name beneath a synced directory.
type ManifestEntry struct {
	Path   string `json:"p"`           // slash-separated, relative, never "." nor with ".."
	Type   string `json:"t"`           // EntryFile, EntryDir or EntrySymlink
	Size   int64  `json:"s,omitempty"` // files
	MTime  int64  `json:"m,omitempty"` // unix nanoseconds
	Mode   uint32 `json:"o,omitempty"` // permission bits
	Link   string `json:"l,omitempty"` // symlink target, never followed
	SHA256 string `json:"h,omitempty"` // hex, files, only when asked for by path
}

// ManifestRequest is fs.manifest's params: the whole tree under Dir, or
// only Paths (each file then hashed). A missing Dir is an empty tree.
type ManifestRequest struct {
	Dir        string   `json:"dir"`
	Paths      []string `json:"paths,omitempty"`
	MaxEntries int      `json:"max_entries,omitempty"`
	// Track asks the agent to watch the listed tree (sync_track.go); Since
	// is the token of a listing the host kept: if nothing changed since,
	// the reply says Unchanged and no entries follow.
	Track bool   `json:"track,omitempty"`
	Since string `json:"since,omitempty"`
}

// RemoveParams are fs.remove's parameters.
type RemoveParams struct {
	Dir   string   `json:"dir"`
	Paths []string `json:"paths"`
}

// CheckRelPath accepts a slash-separated path relative to a synced
// directory: not empty, not ".", not absolute, no "..", no NUL, already
// clean, at most PATH_MAX bytes.
func CheckRelPath(p string) error {
	switch {
	case p == "" || p == ".":
		return fmt.Errorf("empty path")
	case len(p) > MaxEntryName:
		return fmt.Errorf("path of %d bytes (at most %d)", len(p), MaxEntryName)
	case strings.ContainsRune(p, 0) || strings.HasPrefix(p, "/") || strings.HasPrefix(p, `\`):
		return fmt.Errorf("path %q is absolute or holds a NUL byte", p)
	case slices.Contains(strings.Split(p, "/"), ".."):
		return fmt.Errorf("path %q contains \"..\"", p)
	case path.Clean(p) != p:
		return fmt.Errorf("path %q is not clean", p)
	}
	return nil
}

// EntryOf describes name (lstat'ed through fsys, never followed); ok is
// false for what sync leaves alone (devices, fifos, sockets). With hash,
// a file's sha256 is read through fsys too.
func EntryOf(fsys fs.FS, name string, info fs.FileInfo, hash bool) (e ManifestEntry, ok bool, err error) {
	e = ManifestEntry{Path: name, MTime: info.ModTime().UnixNano(), Mode: uint32(info.Mode().Perm())}
	switch {
	case info.Mode().IsRegular():
		e.Type, e.Size = EntryFile, info.Size()
		if hash {
			if e.SHA256, err = HashFile(fsys, name); err != nil {
				return e, false, err
			}
		}
	case info.IsDir():
		e.Type = EntryDir
	case info.Mode()&fs.ModeSymlink != 0:
		e.Type = EntrySymlink
		if e.Link, err = fs.ReadLink(fsys, name); err != nil {
			return e, false, fmt.Errorf("read link %s: %w", name, err)
		}
	default:
		return e, false, nil
	}
	return e, true, nil
}

// HashFile is the hex sha256 of the regular file name in fsys.
func HashFile(fsys fs.FS, name string) (string, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", name, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("hash %s: not a regular file", name)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// WriteTarNames writes the named entries of root (relative, in the order
// given: parents before children) as one tar stream for ExtractTar with
// the name ".". Nothing is followed; a name gone since is skipped.
func WriteTarNames(ctx context.Context, w io.Writer, root *os.Root, names []string) error {
	fsys := root.FS()
	tw := tar.NewWriter(w)
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		info, err := fs.Lstat(fsys, name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("stat %s: %w", name, err)
		}
		if err := writeTarEntry(tw, fsys, name, name, info); err != nil {
			return err
		}
	}
	return tw.Close()
}

// MaxManifestTok is the most bytes of a token on the wire.
const MaxManifestTok = 64

// ManifestReply is fs.manifest's response line: the token of the listing
// that follows (empty: not tracked), or Unchanged (no entries follow: the
// listing of Since still holds).
type ManifestReply struct {
	Token     string `json:"token,omitempty"`
	Unchanged bool   `json:"unchanged,omitempty"`
}
