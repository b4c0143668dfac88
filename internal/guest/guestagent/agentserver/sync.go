package agentserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
)

func (s *Server) handleManifest(ctx context.Context, st *agentproto.Stream, _ *slog.Logger, raw json.RawMessage) error {
	var p agentproto.ManifestRequest
	if err := decodeParams(raw, &p); err != nil {
		return fail(st, err)
	}
	if !filepath.IsAbs(p.Dir) {
		return fail(st, agentproto.Errorf(agentproto.CodeBadRequest, "manifest directory %q is not absolute", p.Dir))
	}
	for _, rel := range p.Paths {
		if err := agentproto.CheckRelPath(rel); err != nil {
			return fail(st, agentproto.Errorf(agentproto.CodeBadRequest, "manifest: %v", err))
		}
	}
	maxEntries := p.MaxEntries
	if maxEntries <= 0 {
		maxEntries = s.opts.CopyLimits.WithDefaults().MaxEntries
	}
	if p.Paths == nil && s.trackers.unchanged(p.Dir, p.Since) {
		if err := Respond(st, agentproto.ManifestReply{Unchanged: true}); err != nil {
			return err
		}
		return st.WriteFrame(agentproto.FrameEOF, nil)
	}
	root, err := os.OpenRoot(p.Dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail(st, fmt.Errorf("open %s: %w", p.Dir, err))
	}
	var tr *tracker
	if p.Track && p.Paths == nil && root != nil {
		tr = s.trackers.start(p.Dir)
	}
	var reply agentproto.ManifestReply
	if tr != nil {
		reply.Token = tr.token
	}
	if err := Respond(st, reply); err != nil {
		if tr != nil {
			s.trackers.finish(tr, false)
		}
		return err
	}
	if root == nil { // nothing synced yet
		return st.WriteFrame(agentproto.FrameEOF, nil)
	}
	defer root.Close()
	fsys := root.FS()
	var batch []agentproto.ManifestEntry
	size, n := 0, 0
	emit := func(e agentproto.ManifestEntry) error {
		n++
		if n > maxEntries {
			return agentproto.Errorf(agentproto.CodeBadRequest, "%s holds more than %d entries", p.Dir, maxEntries)
		}
		batch = append(batch, e)
		size += len(e.Path) + len(e.Link) + 128
		if size < agentproto.ManifestBatchBytes {
			return nil
		}
		size = 0
		b := batch
		batch = nil
		return st.WriteJSONFrame(agentproto.FrameManifest, b)
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
			e, ok, err := agentproto.EntryOf(fsys, rel, info, true)
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
			e, ok, err := agentproto.EntryOf(fsys, rel, info, false)
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
		if err := st.WriteJSONFrame(agentproto.FrameManifest, batch); err != nil {
			if tr != nil {
				s.trackers.finish(tr, false)
			}
			return err
		}
	}
	if tr != nil {
		s.trackers.finish(tr, true)
	}
	return st.WriteFrame(agentproto.FrameEOF, nil)
}

func (s *Server) handleRemove(ctx context.Context, st *agentproto.Stream, log *slog.Logger, raw json.RawMessage) error {
	var p agentproto.RemoveParams
	if err := decodeParams(raw, &p); err != nil {
		return fail(st, err)
	}
	if !filepath.IsAbs(p.Dir) {
		return fail(st, agentproto.Errorf(agentproto.CodeBadRequest, "remove directory %q is not absolute", p.Dir))
	}
	for _, rel := range p.Paths {
		if err := agentproto.CheckRelPath(rel); err != nil {
			return fail(st, agentproto.Errorf(agentproto.CodeBadRequest, "remove: %v", err))
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
			return fail(st, agentproto.Errorf(agentproto.CodeIO, "remove %s: %v", rel, err))
		}
	}
	log.Debug("removed", "dir", p.Dir, "paths", len(p.Paths))
	return Respond(st, struct{}{})
}
