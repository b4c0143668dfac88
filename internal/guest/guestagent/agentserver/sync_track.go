package agentserver

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// Change tracking for fs.manifest: after a full listing asked with Track,
// the agent watches every directory it listed (inotify, each directory
// watched before it is read), and hands the host a token. A later request
// with Since set to that token is answered "unchanged", without a walk,
// as long as no event arrived since: the host then reuses the listing it
// kept. Any event, a queue overflow or a failure to watch voids the token,
// and the next request lists in full. The events are read synchronously
// when a request comes in (the descriptor is non-blocking), so a change
// that finished before the request is always seen.
//
// A guest can always lie in its listing; a lie here ("unchanged") can
// still only decide what is uploaded to or removed from its own directory.

const (
	maxTrackers     = 8     // directories tracked at once; the oldest goes first
	maxTrackedDirs  = 16384 // watches per tracker; more and the token is void
	trackEventsMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MODIFY | unix.IN_ATTRIB |
		unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF |
		unix.IN_CLOSE_WRITE | unix.IN_DONT_FOLLOW | unix.IN_ONLYDIR
)

type tracker struct {
	dir   string
	token string
	fd    int
	dirs  int
	void  bool // a watch failed, an event came, or the listing did not finish
	ready bool // the listing finished
}

// trackerTable holds the trackers of one server.
type trackerTable struct {
	mu    sync.Mutex
	order []*tracker // oldest first
}

// unchanged reports whether dir's tracker holds token and saw nothing
// since its listing.
func (tt *trackerTable) unchanged(dir, token string) bool {
	if token == "" {
		return false
	}
	tt.mu.Lock()
	defer tt.mu.Unlock()
	for _, t := range tt.order {
		if t.dir == dir && t.token == token {
			t.drain()
			return t.ready && !t.void
		}
	}
	return false
}

// start replaces dir's tracker with a fresh one (nil when inotify is not
// to be had: the listing is then simply not tracked).
func (tt *trackerTable) start(dir string) *tracker {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	t := &tracker{dir: dir, token: hex.EncodeToString(b), fd: fd}
	tt.mu.Lock()
	defer tt.mu.Unlock()
	keep := tt.order[:0]
	for _, o := range tt.order {
		if o.dir == dir {
			o.close()
			continue
		}
		keep = append(keep, o)
	}
	tt.order = append(keep, t)
	if len(tt.order) > maxTrackers {
		tt.order[0].close()
		tt.order = tt.order[1:]
	}
	return t
}

// watch adds rel (a directory beneath t.dir, "." for itself) before it is
// read.
func (tt *trackerTable) watch(t *tracker, rel string) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if t.void || t.fd < 0 {
		return
	}
	t.dirs++
	if t.dirs > maxTrackedDirs {
		t.void = true
		return
	}
	// The walk goes through an os.Root and never follows links; the watch
	// is added by path with IN_DONT_FOLLOW|IN_ONLYDIR, so a link swapped in
	// meanwhile is not watched through (the walk then sees the link).
	if _, err := unix.InotifyAddWatch(t.fd, filepath.Join(t.dir, filepath.FromSlash(rel)), trackEventsMask); err != nil {
		t.void = true
	}
}

// finish marks t's listing complete (ok) or void.
func (tt *trackerTable) finish(t *tracker, ok bool) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if !ok {
		t.void = true
	}
	t.drain() // events during the walk void the token
	t.ready = true
}

// drain reads pending events; any at all voids the token. Called with the
// table's lock held.
func (t *tracker) drain() {
	if t.fd < 0 {
		t.void = true
		return
	}
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(t.fd, buf)
		if n > 0 {
			t.void = true
			continue
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if !errors.Is(err, unix.EAGAIN) {
			t.void = true
		}
		return
	}
}

func (t *tracker) close() {
	if t.fd >= 0 {
		_ = unix.Close(t.fd)
		t.fd = -1
	}
	t.void = true
}
