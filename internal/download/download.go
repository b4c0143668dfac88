// Package download is the one way banger fetches anything: size-capped,
// hashed while streaming into a staging file, and renamed into place only
// after the hash matches. Nothing downloaded is parsed or extracted before
// that.
package download

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/progress"
)

// Sentinel errors callers and tests can match with errors.Is.
var (
	ErrTooLarge     = errors.New("download exceeds its size cap")
	ErrHashMismatch = errors.New("sha256 mismatch")
	ErrTruncated    = errors.New("download ended early")
	ErrHTTPStatus   = errors.New("unexpected HTTP status")
)

// Spec says what to fetch and how to verify it.
type Spec struct {
	URL      string
	SHA256   string // lower-case hex; required
	Size     int64  // expected size in bytes; 0 when unknown
	MaxBytes int64  // hard cap; required
	Label    string // shown in progress events; defaults to the URL's base name
}

// FetchVerified downloads spec.URL into dst. The body streams into a staging
// file beside dst while its SHA-256 is computed; dst appears only when the
// size and hash match. On any failure no file is left behind.
func FetchVerified(ctx context.Context, client *http.Client, spec Spec, dst string, report progress.Func) error {
	if err := spec.check(); err != nil {
		return fmt.Errorf("fetch %s: %w", spec.URL, err)
	}
	body, length, err := open(ctx, client, spec.URL)
	if err != nil {
		return err
	}
	defer body.Close()
	if length > spec.MaxBytes {
		return fmt.Errorf("fetch %s: server announces %d bytes: %w (%d)", spec.URL, length, ErrTooLarge, spec.MaxBytes)
	}
	if err := save(ctx, body, length, spec, dst, report); err != nil {
		return fmt.Errorf("fetch %s: %w", spec.URL, err)
	}
	return nil
}

// Save is FetchVerified for a body the caller opened itself (a registry
// blob): the same cap, streaming hash, staging file and rename, and nothing
// left behind on failure. spec.URL only names the source in errors.
func Save(ctx context.Context, body io.Reader, spec Spec, dst string, report progress.Func) error {
	if err := spec.check(); err != nil {
		return fmt.Errorf("save %s: %w", spec.URL, err)
	}
	if err := save(ctx, body, 0, spec, dst, report); err != nil {
		return fmt.Errorf("save %s: %w", spec.URL, err)
	}
	return nil
}

func (spec Spec) check() error {
	if spec.MaxBytes <= 0 {
		return errors.New("no size cap given")
	}
	if want := strings.TrimSpace(spec.SHA256); len(want) != sha256.Size*2 {
		return fmt.Errorf("expected sha256 %q is not 64 hex digits", spec.SHA256)
	}
	if spec.Size > spec.MaxBytes {
		return fmt.Errorf("expected size %d: %w (%d)", spec.Size, ErrTooLarge, spec.MaxBytes)
	}
	return nil
}

// save streams body (length bytes when known, else 0) into a staging file
// beside dst, verifies size and hash, and renames it into place.
func save(ctx context.Context, body io.Reader, length int64, spec Spec, dst string, report progress.Func) (err error) {
	want := strings.ToLower(strings.TrimSpace(spec.SHA256))
	label := spec.Label
	if label == "" {
		label = filepath.Base(spec.URL)
	}
	total := spec.Size
	if total == 0 && length > 0 {
		total = length
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".partial-*")
	if err != nil {
		return fmt.Errorf("create staging file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	h := sha256.New()
	pw := &progressWriter{report: report, label: label, total: total}
	n, copyErr := io.Copy(io.MultiWriter(tmp, h, pw), io.LimitReader(ctxReader{ctx, body}, spec.MaxBytes+1))
	pw.flush()
	got := hex.EncodeToString(h.Sum(nil))
	switch {
	case n > spec.MaxBytes:
		return fmt.Errorf("%w (%d bytes)", ErrTooLarge, spec.MaxBytes)
	case spec.Size > 0 && n == spec.Size && got != want:
		// Checked before copyErr: a source that verifies its own digest
		// (a registry client) fails the read at EOF with its own error.
		return fmt.Errorf("got %s, expected %s: %w", got, want, ErrHashMismatch)
	case copyErr != nil:
		return fmt.Errorf("after %d bytes: %w", n, truncation(copyErr))
	case length > 0 && n != length:
		return fmt.Errorf("got %d of %d bytes: %w", n, length, ErrTruncated)
	case spec.Size > 0 && n != spec.Size:
		return fmt.Errorf("got %d bytes, expected %d: %w", n, spec.Size, ErrTruncated)
	case got != want:
		return fmt.Errorf("got %s, expected %s: %w", got, want, ErrHashMismatch)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync staging file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close staging file: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("move into place: %w", err)
	}
	return nil
}

// ctxReader ends a read loop when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// GetBounded fetches a small document (manifest, index, sums file, signature)
// into memory, failing with ErrTooLarge past max bytes.
func GetBounded(ctx context.Context, client *http.Client, url string, max int64) ([]byte, error) {
	body, length, err := open(ctx, client, url)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	if length > max {
		return nil, fmt.Errorf("get %s: server announces %d bytes: %w (%d)", url, length, ErrTooLarge, max)
	}
	data, err := io.ReadAll(io.LimitReader(body, max+1))
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", url, truncation(err))
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("get %s: %w (%d bytes)", url, ErrTooLarge, max)
	}
	if length > 0 && int64(len(data)) != length {
		return nil, fmt.Errorf("get %s: got %d of %d bytes: %w", url, len(data), length, ErrTruncated)
	}
	return data, nil
}

// truncation marks a body that ended before its announced length (the HTTP
// client reports io.ErrUnexpectedEOF) as ErrTruncated, keeping the cause.
func truncation(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %w", ErrTruncated, err)
	}
	return err
}

func open(ctx context.Context, client *http.Client, url string) (io.ReadCloser, int64, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("fetch %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("fetch %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("fetch %s: %w: %s", url, ErrHTTPStatus, resp.Status)
	}
	return resp.Body, resp.ContentLength, nil
}

// progressWriter reports bytes written at most every 100 ms.
type progressWriter struct {
	report progress.Func
	label  string
	total  int64
	done   int64
	last   time.Time
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if p.report != nil && time.Since(p.last) >= 100*time.Millisecond {
		p.flush()
	}
	return len(b), nil
}

func (p *progressWriter) flush() {
	p.last = time.Now()
	p.report.Report(progress.Event{Stage: "download", Item: p.label, Done: p.done, Total: p.total, Unit: "bytes"})
}
