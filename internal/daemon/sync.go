package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/guestsync"
	"github.com/bangerdev/banger/internal/rpc"
)

func (d *Daemon) syncMethods(m *rpc.Methods) {
	rpc.Register(m, api.MethodVMSync, d.vmSync)
}

// vmSync runs one sync round: the daemon, the CLI's user, reads the host
// directory itself through an os.Root; the guest's manifest only decides
// what is uploaded to or removed from the guest directory.
func (d *Daemon) vmSync(ctx context.Context, c *rpc.Call, p api.VMSync) (api.SyncResult, error) {
	if !filepath.IsAbs(p.Local) {
		return api.SyncResult{}, api.Errorf(api.CodeInvalidArgument, "vm sync: host directory %q must be absolute", p.Local)
	}
	if !path.IsAbs(p.Guest) || path.Clean(p.Guest) == "/" {
		return api.SyncResult{}, api.Errorf(api.CodeInvalidArgument, "vm sync: guest directory %q must be absolute and not /", p.Guest)
	}
	fi, err := os.Stat(p.Local)
	if err != nil {
		return api.SyncResult{}, api.Errorf(api.CodeNotFound, "vm sync: %v", err)
	}
	if !fi.IsDir() {
		return api.SyncResult{}, api.Errorf(api.CodeInvalidArgument, "vm sync: %s is not a directory (use vm cp for a file)", p.Local)
	}
	if _, err := guestsync.ParseIgnore("--exclude", p.Excludes); err != nil {
		return api.SyncResult{}, api.Errorf(api.CodeInvalidArgument, "vm sync: %v", err)
	}
	c.SetTarget(p.Name)
	vm, ga, err := d.agentOf(ctx, p.Name, "sync")
	if err != nil {
		return api.SyncResult{}, err
	}
	res, err := guestsync.Run(ctx, ga.Client, filepath.Clean(p.Local), path.Clean(p.Guest), guestsync.Options{
		Excludes:   p.Excludes,
		Delete:     p.Delete,
		MaxEntries: d.cfg.Copy.MaxEntries,
		// A new boot (or another VM of the name) never meets an old listing.
		Cache: d.syncCache, CacheKey: vm.ID + "\x00" + vm.BootID + "\x00" + path.Clean(p.Guest),
	})
	if err != nil {
		hint := ""
		if errors.Is(err, agentproto.ErrArchiveLimit) {
			hint = " (raise copy.max_bytes or copy.max_entries in config.toml and restart the daemon)"
		}
		return api.SyncResult{}, agentError(fmt.Errorf("sync %s into %s in vm %q: %w%s", p.Local, p.Guest, vm.Name, err, hint))
	}
	c.Log.InfoContext(ctx, "synced into guest", "vm", vm.Name, "guest_dir", p.Guest,
		"cached_listing", res.Cached, "uploaded", res.Uploaded, "bytes", res.Bytes, "removed", res.Removed, "hashed", res.Hashed, "duration", res.Duration,
		"local", res.Local, "manifest", res.Manifest, "hash", res.Hash, "apply", res.Apply)
	return api.SyncResult{
		Scanned: res.Scanned, Uploaded: res.Uploaded, Bytes: res.Bytes, Hashed: res.Hashed, Removed: res.Removed,
		DurationMS: ms(res.Duration), LocalMS: ms(res.Local), ManifestMS: ms(res.Manifest), HashMS: ms(res.Hash), ApplyMS: ms(res.Apply),
		CachedListing: res.Cached,
	}, nil
}

func ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}
