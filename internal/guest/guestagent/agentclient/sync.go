package agentclient

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
)

// Manifest lists req.Dir in the guest (see ManifestRequest), calling fn
// with each batch. The guest is hostile: every entry is checked
// (CheckRelPath, a known type, sizes, hash form, link length) and more
// than req.MaxEntries (default DefaultCopyMaxEntries) refuse the whole
// manifest with ErrBadManifest.
func (c *Client) Manifest(ctx context.Context, req agentproto.ManifestRequest, fn func([]agentproto.ManifestEntry) error) error {
	_, err := c.TrackedManifest(ctx, req, fn)
	return err
}

// TrackedManifest is Manifest returning the guest's reply line too: with
// req.Track, the token of this listing; with req.Since, whether the guest
// says nothing changed since (then fn is never called). The reply is the
// guest's word: a token of more than 64 bytes, Unchanged without Since, or
// entries after Unchanged refuse the manifest with ErrBadManifest.
func (c *Client) TrackedManifest(ctx context.Context, req agentproto.ManifestRequest, fn func([]agentproto.ManifestEntry) error) (agentproto.ManifestReply, error) {
	var reply agentproto.ManifestReply
	if req.MaxEntries <= 0 {
		req.MaxEntries = agentproto.DefaultCopyMaxEntries
	}
	st, err := c.call(ctx, agentproto.MethodManifest, req, &reply)
	if err != nil {
		return reply, err
	}
	if len(reply.Token) > agentproto.MaxManifestTok || (reply.Unchanged && (req.Since == "" || req.Paths != nil)) {
		_ = st.Close()
		return agentproto.ManifestReply{}, fmt.Errorf("manifest of %s: %w: a token of %d bytes, or unchanged since nothing asked", req.Dir, agentproto.ErrBadManifest, len(reply.Token))
	}
	if reply.Unchanged {
		fn = func([]agentproto.ManifestEntry) error {
			return fmt.Errorf("manifest of %s: %w: entries after unchanged", req.Dir, agentproto.ErrBadManifest)
		}
	}
	return reply, c.readManifest(ctx, st, req, fn)
}

func (c *Client) readManifest(ctx context.Context, st *agentproto.Stream, req agentproto.ManifestRequest, fn func([]agentproto.ManifestEntry) error) error {
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { abort(st) })
	defer stop()
	n := 0
	for {
		t, payload, err := st.ReadFrame()
		if err != nil {
			return fmt.Errorf("manifest of %s: %w", req.Dir, ctxOr(ctx, lostIfEOF(err)))
		}
		switch t {
		case agentproto.FrameManifest:
			var batch []agentproto.ManifestEntry
			if err := json.Unmarshal(payload, &batch); err != nil {
				return fmt.Errorf("manifest of %s: %w: undecodable batch: %v", req.Dir, agentproto.ErrBadManifest, err)
			}
			n += len(batch)
			if n > req.MaxEntries {
				return fmt.Errorf("manifest of %s: %w: more than %d entries", req.Dir, agentproto.ErrBadManifest, req.MaxEntries)
			}
			for _, e := range batch {
				if err := checkEntry(e); err != nil {
					return fmt.Errorf("manifest of %s: %w: %v", req.Dir, agentproto.ErrBadManifest, err)
				}
			}
			if err := fn(batch); err != nil {
				return err
			}
		case agentproto.FrameEOF:
			return nil
		case agentproto.FrameError:
			return fmt.Errorf("manifest of %s: %w", req.Dir, agentproto.DecodeErrorFrame(payload))
		default:
			return fmt.Errorf("manifest of %s: unexpected frame %q", req.Dir, t)
		}
	}
}

func checkEntry(e agentproto.ManifestEntry) error {
	if err := agentproto.CheckRelPath(e.Path); err != nil {
		return err
	}
	switch e.Type {
	case agentproto.EntryFile, agentproto.EntryDir, agentproto.EntrySymlink:
	default:
		return fmt.Errorf("%.64q has unknown type %.8q", e.Path, e.Type)
	}
	if e.Size < 0 || len(e.Link) > agentproto.MaxEntryName || e.Mode > 0o7777 {
		return fmt.Errorf("%.64q has a negative size, a mode over 07777 or a link target over %d bytes", e.Path, agentproto.MaxEntryName)
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
	return c.unary(ctx, agentproto.MethodRemove, agentproto.RemoveParams{Dir: dir, Paths: paths}, nil)
}
