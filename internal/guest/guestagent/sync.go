package guestagent

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Methods of `vm sync` (see doc.go). Uploads reuse fs.copy_in with the
// name ".", so they get ExtractTar's rules unchanged.
const (
	MethodManifest = "fs.manifest"
	MethodRemove   = "fs.remove"
)

// frameManifest carries a JSON []ManifestEntry batch (fs.manifest).
const frameManifest byte = 'm'

// manifestBatchBytes is where a manifest batch is sent: well under maxFrame.
const manifestBatchBytes = 256 << 10

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

type removeParams struct {
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
	case len(p) > maxEntryName:
		return fmt.Errorf("path of %d bytes (at most %d)", len(p), maxEntryName)
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

func (s *Server) handleManifest(ctx context.Context, st *stream, _ *slog.Logger, raw json.RawMessage) error {
	var p ManifestRequest
	if err := decodeParams(raw, &p); err != nil {
		return fail(st, err)
	}
	if !filepath.IsAbs(p.Dir) {
		return fail(st, errorf(CodeBadRequest, "manifest directory %q is not absolute", p.Dir))
	}
	for _, rel := range p.Paths {
		if err := CheckRelPath(rel); err != nil {
			return fail(st, errorf(CodeBadRequest, "manifest: %v", err))
		}
	}
	maxEntries := p.MaxEntries
	if maxEntries <= 0 {
		maxEntries = s.opts.CopyLimits.withDefaults().MaxEntries
	}
	if p.Paths == nil && s.trackers.unchanged(p.Dir, p.Since) {
		if err := respond(st, ManifestReply{Unchanged: true}); err != nil {
			return err
		}
		return st.writeFrame(frameEOF, nil)
	}
	root, err := os.OpenRoot(p.Dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail(st, fmt.Errorf("open %s: %w", p.Dir, err))
	}
	var tr *tracker
	if p.Track && p.Paths == nil && root != nil {
		tr = s.trackers.start(p.Dir)
	}
	var reply ManifestReply
	if tr != nil {
		reply.Token = tr.token
	}
	if err := respond(st, reply); err != nil {
		if tr != nil {
			s.trackers.finish(tr, false)
		}
		return err
	}
	if root == nil { // nothing synced yet
		return st.writeFrame(frameEOF, nil)
	}
	defer root.Close()
	fsys := root.FS()
	var batch []ManifestEntry
	size, n := 0, 0
	emit := func(e ManifestEntry) error {
		n++
		if n > maxEntries {
			return errorf(CodeBadRequest, "%s holds more than %d entries", p.Dir, maxEntries)
		}
		batch = append(batch, e)
		size += len(e.Path) + len(e.Link) + 128
		if size < manifestBatchBytes {
			return nil
		}
		size = 0
		b := batch
		batch = nil
		return st.writeJSONFrame(frameManifest, b)
	}
	if p.Paths != nil {
		for _, rel := range p.Paths {
			if err := ctx.Err(); err != nil {
				return err
			}
			// Not there, under a link, unreadable: left out, so the host
			// sends its own copy (which replaces whatever is there).
			info, err := fs.Lstat(fsys, rel)
			if err != nil {
				continue
			}
			e, ok, err := EntryOf(fsys, rel, info, true)
			if err != nil {
				continue
			}
			if ok {
				if err := emit(e); err != nil {
					return failFrame(st, err)
				}
			}
		}
	} else {
		err = fs.WalkDir(fsys, ".", func(rel string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // removed during the walk
				}
				return err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if tr != nil && d.IsDir() {
				s.trackers.watch(tr, rel) // before WalkDir reads it
			}
			if rel == "." {
				return nil
			}
			info, err := d.Info()
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			e, ok, err := EntryOf(fsys, rel, info, false)
			if err != nil || !ok {
				return err
			}
			return emit(e)
		})
		if err != nil {
			if tr != nil {
				s.trackers.finish(tr, false)
			}
			return failFrame(st, fmt.Errorf("list %s: %w", p.Dir, err))
		}
	}
	if len(batch) > 0 {
		if err := st.writeJSONFrame(frameManifest, batch); err != nil {
			if tr != nil {
				s.trackers.finish(tr, false)
			}
			return err
		}
	}
	if tr != nil {
		s.trackers.finish(tr, true)
	}
	return st.writeFrame(frameEOF, nil)
}

func (s *Server) handleRemove(ctx context.Context, st *stream, log *slog.Logger, raw json.RawMessage) error {
	var p removeParams
	if err := decodeParams(raw, &p); err != nil {
		return fail(st, err)
	}
	if !filepath.IsAbs(p.Dir) {
		return fail(st, errorf(CodeBadRequest, "remove directory %q is not absolute", p.Dir))
	}
	for _, rel := range p.Paths {
		if err := CheckRelPath(rel); err != nil {
			return fail(st, errorf(CodeBadRequest, "remove: %v", err))
		}
	}
	root, err := os.OpenRoot(p.Dir)
	if err != nil {
		return fail(st, fmt.Errorf("open %s: %w", p.Dir, err))
	}
	defer root.Close()
	for _, rel := range p.Paths {
		if err := ctx.Err(); err != nil {
			return fail(st, err)
		}
		// Inside the root: a symlink is removed, never followed.
		if err := root.RemoveAll(rel); err != nil {
			return fail(st, errorf(CodeIO, "remove %s: %v", rel, err))
		}
	}
	log.Debug("removed", "dir", p.Dir, "paths", len(p.Paths))
	return respond(st, struct{}{})
}

// Manifest lists req.Dir in the guest (see ManifestRequest), calling fn
// with each batch. The guest is hostile: every entry is checked
// (CheckRelPath, a known type, sizes, hash form, link length) and more
// than req.MaxEntries (default DefaultCopyMaxEntries) refuse the whole
// manifest with ErrBadManifest.
func (c *Client) Manifest(ctx context.Context, req ManifestRequest, fn func([]ManifestEntry) error) error {
	_, err := c.TrackedManifest(ctx, req, fn)
	return err
}

// TrackedManifest is Manifest returning the guest's reply line too: with
// req.Track, the token of this listing; with req.Since, whether the guest
// says nothing changed since (then fn is never called). The reply is the
// guest's word: a token of more than 64 bytes, Unchanged without Since, or
// entries after Unchanged refuse the manifest with ErrBadManifest.
func (c *Client) TrackedManifest(ctx context.Context, req ManifestRequest, fn func([]ManifestEntry) error) (ManifestReply, error) {
	var reply ManifestReply
	if req.MaxEntries <= 0 {
		req.MaxEntries = DefaultCopyMaxEntries
	}
	st, err := c.call(ctx, MethodManifest, req, &reply)
	if err != nil {
		return reply, err
	}
	if len(reply.Token) > maxManifestTok || (reply.Unchanged && (req.Since == "" || req.Paths != nil)) {
		_ = st.Close()
		return ManifestReply{}, fmt.Errorf("manifest of %s: %w: a token of %d bytes, or unchanged since nothing asked", req.Dir, ErrBadManifest, len(reply.Token))
	}
	if reply.Unchanged {
		fn = func([]ManifestEntry) error {
			return fmt.Errorf("manifest of %s: %w: entries after unchanged", req.Dir, ErrBadManifest)
		}
	}
	return reply, c.readManifest(ctx, st, req, fn)
}

func (c *Client) readManifest(ctx context.Context, st *stream, req ManifestRequest, fn func([]ManifestEntry) error) error {
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { abort(st) })
	defer stop()
	n := 0
	for {
		t, payload, err := st.readFrame()
		if err != nil {
			return fmt.Errorf("manifest of %s: %w", req.Dir, ctxOr(ctx, lostIfEOF(err)))
		}
		switch t {
		case frameManifest:
			var batch []ManifestEntry
			if err := json.Unmarshal(payload, &batch); err != nil {
				return fmt.Errorf("manifest of %s: %w: undecodable batch: %v", req.Dir, ErrBadManifest, err)
			}
			n += len(batch)
			if n > req.MaxEntries {
				return fmt.Errorf("manifest of %s: %w: more than %d entries", req.Dir, ErrBadManifest, req.MaxEntries)
			}
			for _, e := range batch {
				if err := checkEntry(e); err != nil {
					return fmt.Errorf("manifest of %s: %w: %v", req.Dir, ErrBadManifest, err)
				}
			}
			if err := fn(batch); err != nil {
				return err
			}
		case frameEOF:
			return nil
		case frameError:
			return fmt.Errorf("manifest of %s: %w", req.Dir, decodeErrorFrame(payload))
		default:
			return fmt.Errorf("manifest of %s: unexpected frame %q", req.Dir, t)
		}
	}
}

func checkEntry(e ManifestEntry) error {
	if err := CheckRelPath(e.Path); err != nil {
		return err
	}
	switch e.Type {
	case EntryFile, EntryDir, EntrySymlink:
	default:
		return fmt.Errorf("%.64q has unknown type %.8q", e.Path, e.Type)
	}
	if e.Size < 0 || len(e.Link) > maxEntryName || e.Mode > 0o7777 {
		return fmt.Errorf("%.64q has a negative size, a mode over 07777 or a link target over %d bytes", e.Path, maxEntryName)
	}
	if e.SHA256 != "" {
		if b, err := hex.DecodeString(e.SHA256); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("%.64q has a malformed sha256", e.Path)
		}
	}
	return nil
}

// Remove deletes paths (relative, checked by CheckRelPath) beneath dir in
// the guest, directories with what they hold; symlinks are removed, not
// followed. Missing paths are not an error.
func (c *Client) Remove(ctx context.Context, dir string, paths []string) error {
	return c.unary(ctx, MethodRemove, removeParams{Dir: dir, Paths: paths}, nil)
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
