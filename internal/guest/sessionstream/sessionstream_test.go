package sessionstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"
)

// readAll drains r until EOF and returns the bytes per kind and the bytes lost.
func readAll(t *testing.T, r *Subscriber) (out, errOut []byte, lost int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		c, l, err := r.Next(ctx)
		lost += l
		if errors.Is(err, io.EOF) {
			return out, errOut, lost
		}
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		if c.Kind == Stderr {
			errOut = append(errOut, c.Data...)
		} else {
			out = append(out, c.Data...)
		}
	}
}

func TestReplayThenLive(t *testing.T) {
	s := New(1<<10, 4)
	s.Write(Stdout, []byte("line 1\n"))
	s.Write(Stderr, []byte("warn\n"))
	r, err := s.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	done := make(chan struct{})
	var out, errOut []byte
	go func() {
		defer close(done)
		out, errOut, _ = readAll(t, r)
	}()
	time.Sleep(20 * time.Millisecond) // the reader is now waiting for live bytes
	s.Write(Stdout, []byte("line 2\n"))
	s.Close()
	<-done
	if string(out) != "line 1\nline 2\n" || string(errOut) != "warn\n" {
		t.Fatalf("got stdout %q stderr %q", out, errOut)
	}
}

func TestWrapAroundKeepsExactlyTheNewestBytes(t *testing.T) {
	const ring = 100
	s := New(ring, 1)
	var all bytes.Buffer
	for i := range 1000 {
		line := fmt.Sprintf("%04d\n", i)
		all.WriteString(line)
		s.Write(Stdout, []byte(line))
	}
	// One write bigger than the ring on its own.
	big := bytes.Repeat([]byte("xyz"), 100)
	all.Write(big)
	s.Write(Stdout, big)
	s.Write(Stdout, []byte("tail"))
	all.WriteString("tail")
	s.Close()
	written, held := s.Stats()
	if written != int64(all.Len()) || held != ring {
		t.Fatalf("stats: written %d held %d, want %d and %d", written, held, all.Len(), ring)
	}
	r, _ := s.Subscribe()
	out, _, lost := readAll(t, r)
	want := all.Bytes()[all.Len()-ring:]
	if !bytes.Equal(out, want) || lost != 0 {
		t.Fatalf("replay %q (lost %d), want %q", out, lost, want)
	}
}

func TestSlowReaderLosesOldestBytesAndWriterNeverWaits(t *testing.T) {
	s := New(64, 2)
	slow, _ := s.Subscribe()
	fast, _ := s.Subscribe()
	start := time.Now()
	var all bytes.Buffer
	for i := range 10000 { // nobody reads while this runs
		line := fmt.Sprintf("%05d\n", i)
		all.WriteString(line)
		s.Write(Stdout, []byte(line))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("writer took %s with idle readers", d)
	}
	s.Close()
	out, _, lost := readAll(t, slow)
	if int64(len(out))+lost != int64(all.Len()) {
		t.Fatalf("read %d + lost %d != written %d", len(out), lost, all.Len())
	}
	if !bytes.Equal(out, all.Bytes()[all.Len()-64:]) {
		t.Fatalf("slow reader got %q", out)
	}
	// The other subscriber is independent of the first.
	out2, _, _ := readAll(t, fast)
	if !bytes.Equal(out2, out) {
		t.Fatalf("second reader got %q, want %q", out2, out)
	}
}

func TestConcurrentSubscribersSeeTheSameBytes(t *testing.T) {
	const readers = 8
	s := New(1<<20, readers)
	var wg sync.WaitGroup
	results := make([][]byte, readers)
	for i := range readers {
		r, err := s.Subscribe()
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			results[i], _, _ = readAll(t, r)
		}()
	}
	var all bytes.Buffer
	for i := range 5000 {
		line := fmt.Sprintf("line %d\n", i)
		all.WriteString(line)
		s.Write(Stdout, []byte(line))
	}
	s.Close()
	wg.Wait()
	for i, got := range results {
		if !bytes.Equal(got, all.Bytes()) {
			t.Fatalf("reader %d got %d bytes, want %d", i, len(got), all.Len())
		}
	}
	if _, err := s.Subscribe(); err != nil {
		t.Fatalf("subscribe after readers closed: %v", err)
	}
}

func TestSubscriberLimit(t *testing.T) {
	s := New(10, 2)
	a, _ := s.Subscribe()
	if _, err := s.Subscribe(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Subscribe(); !errors.Is(err, ErrTooManySubscribers) {
		t.Fatalf("third subscribe: %v, want ErrTooManySubscribers", err)
	}
	a.Close()
	a.Close() // idempotent: frees one place only
	if _, err := s.Subscribe(); err != nil {
		t.Fatalf("subscribe after close: %v", err)
	}
	if _, err := s.Subscribe(); !errors.Is(err, ErrTooManySubscribers) {
		t.Fatalf("double close freed two places: %v", err)
	}
	if _, _, err := a.Next(context.Background()); err == nil {
		t.Fatal("next on a closed subscriber succeeded")
	}
}

func TestBytesUntouched(t *testing.T) {
	// UTF-8 (split across writes), terminal escapes, NUL and invalid bytes
	// are kept as they are: sanitising is the displaying client's job.
	payload := []byte("h\xc3\xa9llo \x1b]52;c;ZXZpbA==\x07 \x1b[2J\x00\xff\xfe 日本\r\n")
	s := New(1<<10, 1)
	for i := 0; i < len(payload); i += 3 {
		s.Write(Stdout, payload[i:min(i+3, len(payload))])
	}
	s.Close()
	r, _ := s.Subscribe()
	out, _, _ := readAll(t, r)
	if !bytes.Equal(out, payload) {
		t.Fatalf("got %q, want %q", out, payload)
	}
}

func TestNextHonoursContextAndCopies(t *testing.T) {
	s := New(10, 1)
	r, _ := s.Subscribe()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, _, err := r.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("next on an idle stream: %v", err)
	}
	s.Write(Stdout, []byte("abc"))
	c, _, err := r.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c.Data[0] = 'X' // the caller's copy
	s.Write(Stdout, []byte("def"))
	r.Close()
	r3, _ := s.Subscribe()
	s.Close()
	out, _, _ := readAll(t, r3)
	if string(out) != "abcdef" {
		t.Fatalf("ring changed through a returned chunk: %q", out)
	}
	s.Write(Stdout, []byte("after close"))
	if w, _ := s.Stats(); w != 6 {
		t.Fatalf("write after close counted: %d", w)
	}
}

// BenchmarkWrite measures appending 4 KiB writes to a 1 MiB ring that has
// wrapped, with one live reader.
func BenchmarkWrite(b *testing.B) {
	s := New(1<<20, 1)
	r, _ := s.Subscribe()
	defer r.Close()
	go func() {
		for {
			if _, _, err := r.Next(context.Background()); err != nil {
				return
			}
		}
	}()
	p := bytes.Repeat([]byte("x"), 4096)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		s.Write(Stdout, p)
	}
	s.Close()
}
