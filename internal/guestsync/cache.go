package guestsync

import (
	"context"
	"sync"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
)

// TrackingAgent is an Agent that can track a listed guest tree
// (agentclient.Client): an unchanged guest then needs no listing at all.
type TrackingAgent interface {
	TrackedManifest(ctx context.Context, req agentproto.ManifestRequest, fn func([]agentproto.ManifestEntry) error) (agentproto.ManifestReply, error)
}

// maxCached bounds the listings a Cache keeps (each at most MaxEntries
// entries).
const maxCached = 16

// Cache keeps the guest's last full listing per key (a VM's boot and a
// guest directory), with the token the guest gave it. A round that finds
// one asks the guest whether anything changed since; "unchanged" reuses
// the listing, anything else lists in full and replaces it. The listing
// is the raw one (before excludes), so each round filters it anew.
type Cache struct {
	mu      sync.Mutex
	entries map[string]cached
	order   []string // oldest first
}

type cached struct {
	token string
	tree  Tree
}

// NewCache returns an empty cache.
func NewCache() *Cache { return &Cache{entries: map[string]cached{}} }

func (c *Cache) get(key string) (cached, bool) {
	if c == nil {
		return cached{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	return e, ok
}

func (c *Cache) put(key string, e cached) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocked(key)
	if e.token == "" {
		return
	}
	c.entries[key] = e
	c.order = append(c.order, key)
	if len(c.order) > maxCached {
		delete(c.entries, c.order[0])
		c.order = c.order[1:]
	}
}

// Forget drops every listing whose key starts with prefix (a VM's).
func (c *Cache) Forget(prefix string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range append([]string(nil), c.order...) {
		if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
			c.dropLocked(k)
		}
	}
}

func (c *Cache) dropLocked(key string) {
	if _, ok := c.entries[key]; !ok {
		return
	}
	delete(c.entries, key)
	for i, k := range c.order {
		if k == key {
			c.order = append(c.order[:i], c.order[i+1:]...)
			break
		}
	}
}

// guestTree lists guestDir (all of it: excludes are applied by the
// caller), through the cache when the agent tracks.
func guestTree(ctx context.Context, agent Agent, guestDir string, opts Options) (Tree, bool, error) {
	req := agentproto.ManifestRequest{Dir: guestDir, MaxEntries: opts.MaxEntries}
	ta, tracking := agent.(TrackingAgent)
	if !tracking || opts.Cache == nil {
		tree := Tree{}
		err := agent.Manifest(ctx, req, func(batch []agentproto.ManifestEntry) error {
			for _, e := range batch {
				tree[e.Path] = e
			}
			return nil
		})
		return tree, false, err
	}
	prev, have := opts.Cache.get(opts.CacheKey)
	req.Track = true
	if have {
		req.Since = prev.token
	}
	tree := Tree{}
	reply, err := ta.TrackedManifest(ctx, req, func(batch []agentproto.ManifestEntry) error {
		for _, e := range batch {
			tree[e.Path] = e
		}
		return nil
	})
	if err != nil {
		opts.Cache.put(opts.CacheKey, cached{})
		return nil, false, err
	}
	if reply.Unchanged {
		// TrackedManifest refuses Unchanged unless Since was sent: prev is there.
		return prev.tree, true, nil
	}
	opts.Cache.put(opts.CacheKey, cached{token: reply.Token, tree: tree})
	return tree, false, nil
}
