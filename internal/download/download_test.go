package download

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/progress"
)

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// server serves routes on 127.0.0.1 and closes itself with the test.
func server(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// assertEmptyDir fails unless dir holds no entries: no dst, no staging file.
func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	for _, e := range ents {
		t.Errorf("left behind in %s: %s", dir, e.Name())
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestFetchVerifiedHappyPathReportsProgress(t *testing.T) {
	body := payload(3<<20 + 17)
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		// Write in slices with pauses so more than one progress event fires.
		for off := 0; off < len(body); off += 1 << 20 {
			end := min(off+1<<20, len(body))
			w.Write(body[off:end])
			w.(http.Flusher).Flush()
			time.Sleep(120 * time.Millisecond)
		}
	})
	dir := t.TempDir()
	dst := filepath.Join(dir, "sub", "blob")
	var (
		mu     sync.Mutex
		events []progress.Event
	)
	report := func(ev progress.Event) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, ev)
	}
	err := FetchVerified(ctx(t), srv.Client(), Spec{URL: srv.URL + "/blob", SHA256: sum(body), Size: int64(len(body)), MaxBytes: 8 << 20}, dst, report)
	if err != nil {
		t.Fatalf("FetchVerified: %v", err)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if sum(got) != sum(body) {
		t.Fatalf("dst content differs from served body")
	}
	ents, _ := os.ReadDir(filepath.Dir(dst))
	if len(ents) != 1 {
		t.Fatalf("expected only dst in its directory, found %d entries", len(ents))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) < 2 {
		t.Fatalf("expected several progress events, got %d", len(events))
	}
	last := events[len(events)-1]
	if last.Done != int64(len(body)) || last.Total != int64(len(body)) {
		t.Fatalf("last event Done=%d Total=%d, want both %d", last.Done, last.Total, len(body))
	}
	if last.Item != "blob" || last.Unit != "bytes" || last.Time.IsZero() {
		t.Fatalf("last event fields: %+v", last)
	}
	for i := 1; i < len(events); i++ {
		if events[i].Done < events[i-1].Done {
			t.Fatalf("progress went backwards: %d then %d", events[i-1].Done, events[i].Done)
		}
	}
}

func TestFetchVerifiedFailuresLeaveNothing(t *testing.T) {
	body := payload(64 << 10)
	tests := []struct {
		name    string
		handler http.HandlerFunc
		spec    func(url string) Spec
		want    error
	}{
		{
			name: "announced length over cap",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				w.Write(body)
			},
			spec: func(u string) Spec { return Spec{URL: u, SHA256: sum(body), MaxBytes: 1024} },
			want: ErrTooLarge,
		},
		{
			name: "chunked body over cap",
			handler: func(w http.ResponseWriter, r *http.Request) {
				// Flushing before the end forces chunked encoding: no length announced.
				for off := 0; off < len(body); off += 4096 {
					w.Write(body[off : off+4096])
					w.(http.Flusher).Flush()
				}
			},
			spec: func(u string) Spec { return Spec{URL: u, SHA256: sum(body), MaxBytes: 10000} },
			want: ErrTooLarge,
		},
		{
			name: "expected size over cap",
			handler: func(w http.ResponseWriter, r *http.Request) {
				t.Errorf("no request should be made when the expected size exceeds the cap")
			},
			spec: func(u string) Spec { return Spec{URL: u, SHA256: sum(body), Size: 5000, MaxBytes: 4000} },
			want: ErrTooLarge,
		},
		{
			name: "hash mismatch",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Write(body)
			},
			spec: func(u string) Spec { return Spec{URL: u, SHA256: sum([]byte("other")), MaxBytes: 1 << 20} },
			want: ErrHashMismatch,
		},
		{
			name: "fewer bytes than the expected size",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Write(body[:1000])
			},
			spec: func(u string) Spec {
				return Spec{URL: u, SHA256: sum(body[:1000]), Size: int64(len(body)), MaxBytes: 1 << 20}
			},
			want: ErrTruncated,
		},
		{
			name:    "truncated body",
			handler: truncatingHandler(t, body, 5000),
			spec:    func(u string) Spec { return Spec{URL: u, SHA256: sum(body), MaxBytes: 1 << 20} },
			want:    ErrTruncated,
		},
		{
			name: "server error 500",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "boom", http.StatusInternalServerError)
			},
			spec: func(u string) Spec { return Spec{URL: u, SHA256: sum(body), MaxBytes: 1 << 20} },
			want: ErrHTTPStatus,
		},
		{
			name:    "not found 404",
			handler: http.NotFound,
			spec:    func(u string) Spec { return Spec{URL: u, SHA256: sum(body), MaxBytes: 1 << 20} },
			want:    ErrHTTPStatus,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := server(t, tc.handler)
			dir := t.TempDir()
			err := FetchVerified(ctx(t), srv.Client(), tc.spec(srv.URL+"/f"), filepath.Join(dir, "f"), nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got error %v, want %v", err, tc.want)
			}
			assertEmptyDir(t, dir)
		})
	}
}

// truncatingHandler announces the full length, sends only n bytes and then
// drops the connection, the way a dying server or proxy would.
func truncatingHandler(t *testing.T, body []byte, n int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		writeTruncated(buf, body, n)
	}
}

func writeTruncated(buf *bufio.ReadWriter, body []byte, n int) {
	fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n", len(body))
	buf.Write(body[:n])
	buf.Flush()
}

func TestFetchVerifiedRejectsBadSpec(t *testing.T) {
	dir := t.TempDir()
	for name, spec := range map[string]Spec{
		"no cap":     {URL: "http://127.0.0.1:1/x", SHA256: sum(nil)},
		"short hash": {URL: "http://127.0.0.1:1/x", SHA256: "abc", MaxBytes: 10},
	} {
		if err := FetchVerified(ctx(t), nil, spec, filepath.Join(dir, "x"), nil); err == nil {
			t.Errorf("%s: expected an error", name)
		}
	}
	assertEmptyDir(t, dir)
}

func TestGetBounded(t *testing.T) {
	body := payload(10000)
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		for off := 0; off < len(body); off += 1000 {
			w.Write(body[off : off+1000])
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/truncated", truncatingHandler(t, body, 300))
	mux.HandleFunc("/missing", http.NotFound)
	srv := server(t, mux.ServeHTTP)

	got, err := GetBounded(ctx(t), srv.Client(), srv.URL+"/ok", int64(len(body)))
	if err != nil || sum(got) != sum(body) {
		t.Fatalf("GetBounded at exactly the cap: err=%v, %d bytes", err, len(got))
	}
	for _, tc := range []struct {
		path string
		max  int64
		want error
	}{
		{"/ok", int64(len(body)) - 1, ErrTooLarge},
		{"/chunked", 5000, ErrTooLarge},
		{"/truncated", 1 << 20, ErrTruncated},
		{"/missing", 1 << 20, ErrHTTPStatus},
	} {
		data, err := GetBounded(ctx(t), srv.Client(), srv.URL+tc.path, tc.max)
		if !errors.Is(err, tc.want) {
			t.Errorf("GetBounded %s max %d: got %v, want %v", tc.path, tc.max, err, tc.want)
		}
		if data != nil {
			t.Errorf("GetBounded %s returned data alongside an error", tc.path)
		}
	}
	// Chunked under the cap is fine.
	got, err = GetBounded(ctx(t), srv.Client(), srv.URL+"/chunked", 1<<20)
	if err != nil || sum(got) != sum(body) {
		t.Fatalf("chunked under cap: err=%v", err)
	}
}

func TestFetchVerifiedHonoursContext(t *testing.T) {
	release := make(chan struct{})
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	defer close(release)
	dir := t.TempDir()
	c, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := FetchVerified(c, srv.Client(), Spec{URL: srv.URL + "/slow", SHA256: sum(nil), MaxBytes: 1 << 20}, filepath.Join(dir, "slow"), nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want context deadline", err)
	}
	assertEmptyDir(t, dir)
}
