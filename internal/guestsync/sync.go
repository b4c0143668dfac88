package guestsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
)

// Options shape one sync round.
type Options struct {
	Excludes []string // .gitignore-style patterns, after the host dir's own .gitignore
	Delete   bool     // remove guest names the host does not have
	// MaxEntries bounds both trees (0: agentproto.DefaultCopyMaxEntries).
	MaxEntries int
	// Cache, when set, keeps the guest's listing under CacheKey between
	// rounds (cache.go): a guest that changed nothing is not listed again.
	Cache    *Cache
	CacheKey string
}

// Result tells what a round did.
type Result struct {
	Scanned  int           `json:"scanned"`  // host entries compared
	Cached   bool          `json:"cached"`   // the guest's listing was the cached one
	Uploaded int           `json:"uploaded"` // entries sent (directories included)
	Bytes    int64         `json:"bytes"`    // file bytes sent
	Hashed   int           `json:"hashed"`   // files compared by sha256
	Removed  int           `json:"removed"`  // guest names removed (topmost)
	Duration time.Duration `json:"duration_ns"`
	// Where the time went: the host's walk, the guest's listing, hashing
	// on both sides, and removing plus uploading.
	Local, Manifest, Hash, Apply time.Duration
}

// Agent is what a round needs of the guest agent (agentclient.Client).
type Agent interface {
	Manifest(ctx context.Context, req agentproto.ManifestRequest, fn func([]agentproto.ManifestEntry) error) error
	Remove(ctx context.Context, dir string, paths []string) error
	CopyIn(ctx context.Context, guestDir, name string, r io.Reader) error
}

// batchBytes keeps a request line's path list well under the agent's
// 1 MiB header limit, even if JSON escaping makes a path six times longer.
const batchBytes = 128 << 10

// LoadMatcher builds the matcher of a round: hostDir's own .gitignore
// (read through root: never a link out of it), then excludes.
func LoadMatcher(root *os.Root, excludes []string) (*Matcher, error) {
	m := &Matcher{}
	data, err := readGitignore(root)
	if err != nil {
		return nil, err
	}
	if data != "" {
		if err := m.Add(".gitignore", strings.Split(data, "\n")); err != nil {
			return nil, err
		}
	}
	if err := m.Add("--exclude", excludes); err != nil {
		return nil, err
	}
	return m, nil
}

func readGitignore(root *os.Root) (string, error) {
	fi, err := root.Lstat(".gitignore")
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("inspect .gitignore: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", nil // a link is synced as a link, not read
	}
	if fi.Size() > 1<<20 {
		return "", fmt.Errorf(".gitignore is %d bytes, over 1 MiB", fi.Size())
	}
	b, err := root.ReadFile(".gitignore")
	if err != nil {
		return "", fmt.Errorf("read .gitignore: %w", err)
	}
	return string(b), nil
}

// LocalTree walks root (lstat only, never following a link) and returns
// what is not excluded.
func LocalTree(ctx context.Context, root *os.Root, m *Matcher, maxEntries int) (Tree, error) {
	fsys := root.FS()
	t := Tree{}
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && name != "." {
				return nil // removed during the walk
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if name == "." {
			return nil
		}
		if m.Match(name, d.IsDir()) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		e, ok, err := agentproto.EntryOf(fsys, name, info, false)
		if err != nil || !ok {
			return err
		}
		if len(t) >= maxEntries {
			return fmt.Errorf("more than %d entries: exclude some (--exclude, .gitignore)", maxEntries)
		}
		t[name] = e
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list host directory: %w", err)
	}
	return t, nil
}

// Run syncs hostDir into guestDir once.
func Run(ctx context.Context, agent Agent, hostDir, guestDir string, opts Options) (Result, error) {
	start := time.Now()
	var res Result
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = agentproto.DefaultCopyMaxEntries
	}
	if !path.IsAbs(guestDir) {
		return res, fmt.Errorf("guest directory %q must be absolute", guestDir)
	}
	root, err := os.OpenRoot(hostDir)
	if err != nil {
		return res, fmt.Errorf("open host directory: %w", err)
	}
	defer root.Close()
	m, err := LoadMatcher(root, opts.Excludes)
	if err != nil {
		return res, err
	}
	local, err := LocalTree(ctx, root, m, opts.MaxEntries)
	if err != nil {
		return res, err
	}
	res.Scanned = len(local)
	res.Local = time.Since(start)
	mark := time.Now()

	listed, fromCache, err := guestTree(ctx, agent, guestDir, opts)
	if err != nil {
		return res, fmt.Errorf("list guest directory: %w", err)
	}
	res.Cached = fromCache
	remote := make(Tree, len(listed))
	for p, e := range listed {
		if !excludedOrBeneath(m, e.Path, e.Type == agentproto.EntryDir) {
			remote[p] = e
		}
	}

	res.Manifest = time.Since(mark)
	mark = time.Now()
	plan := Diff(local, remote, opts.Delete)
	changed, err := settleByHash(ctx, agent, root, guestDir, plan.Hash)
	if err != nil {
		return res, err
	}
	res.Hashed = len(plan.Hash)
	res.Hash = time.Since(mark)
	mark = time.Now()
	upload := append(plan.Upload, changed...)

	for _, batch := range batches(plan.Remove) {
		if err := agent.Remove(ctx, guestDir, batch); err != nil {
			return res, fmt.Errorf("remove in guest: %w", err)
		}
	}
	res.Removed = len(plan.Remove)

	if len(upload) > 0 {
		names := WithParents(upload)
		for _, n := range names {
			if e, ok := local[n]; ok && e.Type == agentproto.EntryFile {
				res.Bytes += e.Size
			}
		}
		res.Uploaded = len(upload)
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(agentproto.WriteTarNames(ctx, pw, root, names)) }()
		err := agent.CopyIn(ctx, guestDir, ".", pr)
		_ = pr.Close()
		if err != nil {
			return res, fmt.Errorf("upload to guest: %w", err)
		}
	}
	res.Apply = time.Since(mark)
	res.Duration = time.Since(start)
	return res, nil
}

// excludedOrBeneath applies m to a guest name and to each of its parents:
// the guest's listing goes into directories the host's walk skipped.
func excludedOrBeneath(m *Matcher, name string, isDir bool) bool {
	if m.Match(name, isDir) {
		return true
	}
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		if m.Match(d, true) {
			return true
		}
	}
	return false
}

// settleByHash returns the files of names whose content differs between
// the host and the guest.
func settleByHash(ctx context.Context, agent Agent, root *os.Root, guestDir string, names []string) ([]string, error) {
	if len(names) == 0 {
		return nil, nil
	}
	guest := map[string]string{}
	for _, batch := range batches(names) {
		err := agent.Manifest(ctx, agentproto.ManifestRequest{Dir: guestDir, Paths: batch, MaxEntries: len(batch)}, func(es []agentproto.ManifestEntry) error {
			for _, e := range es {
				if e.Type == agentproto.EntryFile {
					guest[e.Path] = e.SHA256
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("hash files in guest: %w", err)
		}
	}
	var changed []string
	for _, n := range names {
		h, err := agentproto.HashFile(root.FS(), n)
		if errors.Is(err, fs.ErrNotExist) {
			continue // gone since the walk: the next round removes it
		}
		if err != nil {
			return nil, fmt.Errorf("hash host file: %w", err)
		}
		if g, ok := guest[n]; !ok || g != h {
			changed = append(changed, n)
		}
	}
	return changed, nil
}

// batches splits names so each list stays under batchBytes.
func batches(names []string) [][]string {
	var out [][]string
	start, size := 0, 0
	for i, n := range names {
		if size+len(n)+4 > batchBytes && i > start {
			out = append(out, names[start:i])
			start, size = i, 0
		}
		size += len(n) + 4
	}
	if start < len(names) {
		out = append(out, names[start:])
	}
	return out
}
