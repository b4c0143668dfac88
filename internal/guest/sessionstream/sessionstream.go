// Package sessionstream keeps the output of a long-lived exec session so
// that clients can come and go: a bounded ring of the latest bytes (kept
// with the stream they came from, stdout or stderr) that a new subscriber
// replays first, then follows live.
//
// The writer never waits for a reader: each subscriber is only an offset
// into the ring, so a slow reader that falls more than the ring's size
// behind loses the oldest bytes (Next reports how many) instead of holding
// output, or memory, for everyone. Bytes are kept exactly as written: a
// client that shows them on a terminal sanitises them itself.
package sessionstream

import (
	"context"
	"errors"
	"io"
	"sort"
	"sync"
)

// Kind says which output stream a chunk came from.
type Kind uint8

const (
	Stdout Kind = iota // all output of a session with a tty
	Stderr
)

// maxChunk bounds the bytes one chunk holds, so a reader is handed at most
// this much at once and eviction frees memory in small steps.
const maxChunk = 32 << 10

// ErrTooManySubscribers is returned by Subscribe when the stream already has
// its maximum number of readers.
var ErrTooManySubscribers = errors.New("too many subscribers")

// Chunk is a run of bytes of one Kind starting at Offset in the stream.
type Chunk struct {
	Kind   Kind
	Offset int64
	Data   []byte
}

// Stream is one session's output. The zero value is not usable: see New.
type Stream struct {
	max     int // bytes kept for replay
	maxSubs int

	mu     sync.Mutex
	chunks []Chunk // contiguous, ascending offsets
	size   int     // bytes held in chunks
	start  int64   // offset of the oldest byte held
	end    int64   // bytes written in all
	closed bool
	subs   int
	wake   chan struct{} // closed and replaced when bytes arrive or the stream closes
}

// New returns a stream that keeps the latest replayBytes bytes (at least 1)
// and admits at most maxSubscribers readers at once (at least 1).
func New(replayBytes, maxSubscribers int) *Stream {
	return &Stream{max: max(replayBytes, 1), maxSubs: max(maxSubscribers, 1), wake: make(chan struct{})}
}

// Write appends a copy of p to the stream as output of kind k, dropping
// the oldest bytes beyond the ring's size. Writes after Close are ignored.
func (s *Stream) Write(k Kind, p []byte) {
	if len(p) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.end += int64(len(p))
	if len(p) >= s.max { // only the tail can ever be replayed
		p = p[len(p)-s.max:]
		s.chunks, s.size = s.chunks[:0], 0
	}
	off := s.end - int64(len(p))
	for len(p) > 0 {
		n := min(len(p), maxChunk)
		if last := len(s.chunks) - 1; last >= 0 && s.chunks[last].Kind == k && len(s.chunks[last].Data)+n <= maxChunk {
			// Readers get copies (Next), so the chunk may grow in place.
			c := &s.chunks[last]
			c.Data = append(c.Data, p[:n]...)
		} else {
			s.chunks = append(s.chunks, Chunk{Kind: k, Offset: off, Data: append([]byte(nil), p[:n]...)})
		}
		s.size += n
		off += int64(n)
		p = p[n:]
	}
	s.evict()
	s.broadcast()
}

// evict drops the oldest bytes until at most max are held.
func (s *Stream) evict() {
	drop := 0
	for s.size > s.max {
		c := &s.chunks[drop]
		over := s.size - s.max
		if over >= len(c.Data) {
			s.size -= len(c.Data)
			drop++
			continue
		}
		c.Data = c.Data[over:]
		c.Offset += int64(over)
		s.size -= over
	}
	if drop > 0 {
		s.chunks = append(s.chunks[:0:0], s.chunks[drop:]...)
	}
	if len(s.chunks) > 0 {
		s.start = s.chunks[0].Offset
	} else {
		s.start = s.end
	}
}

func (s *Stream) broadcast() {
	close(s.wake)
	s.wake = make(chan struct{})
}

// Close marks the end of output: readers get io.EOF once they have read
// everything still held.
func (s *Stream) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.broadcast()
	}
}

// Stats reports the bytes written in all and the bytes held for replay.
func (s *Stream) Stats() (written int64, held int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.end, s.size
}

// Subscribe returns a reader that starts at the oldest byte held.
func (s *Stream) Subscribe() (*Subscriber, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs >= s.maxSubs {
		return nil, ErrTooManySubscribers
	}
	s.subs++
	return &Subscriber{s: s, off: s.start}, nil
}

// Subscriber reads a Stream from its own offset. One goroutine at a time.
type Subscriber struct {
	s      *Stream
	off    int64
	closed bool
}

// Next returns the next run of bytes, blocking until there is one, the
// stream closes (io.EOF once all is read) or ctx ends. lost is the number
// of bytes that were dropped from the ring before this reader got to them.
// The chunk's Data is the caller's.
func (r *Subscriber) Next(ctx context.Context) (c Chunk, lost int64, err error) {
	s := r.s
	for {
		s.mu.Lock()
		if r.closed {
			s.mu.Unlock()
			return Chunk{}, 0, errors.New("subscriber closed")
		}
		if r.off < s.start {
			lost += s.start - r.off
			r.off = s.start
		}
		if r.off < s.end {
			i := sort.Search(len(s.chunks), func(i int) bool {
				ch := s.chunks[i]
				return ch.Offset+int64(len(ch.Data)) > r.off
			})
			ch := s.chunks[i]
			// A copy: the writer may append to or trim this chunk later.
			c = Chunk{Kind: ch.Kind, Offset: r.off, Data: append([]byte(nil), ch.Data[r.off-ch.Offset:]...)}
			r.off += int64(len(c.Data))
			s.mu.Unlock()
			return c, lost, nil
		}
		if s.closed {
			s.mu.Unlock()
			return Chunk{}, lost, io.EOF
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return Chunk{}, lost, ctx.Err()
		}
	}
}

// Close releases the reader's place; Next fails after it.
func (r *Subscriber) Close() {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if !r.closed {
		r.closed = true
		r.s.subs--
	}
}
