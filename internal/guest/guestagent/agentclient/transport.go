package agentclient

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/opid"
)

// Dialer opens a fresh stream to the agent; each request uses one.
type Dialer func(ctx context.Context) (net.Conn, error)

// hostHandshake opens a session on conn: HELLO (repeated) until READY with
// our nonce, then START. Returns a reader holding any byte read past READY.
func hostHandshake(ctx context.Context, conn net.Conn) (io.Reader, error) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	nonce := hex.EncodeToString(b[:])
	deadline := time.Now().Add(agentproto.HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	want := []byte(agentproto.ReadyPrefix + nonce + "\n")
	var buf []byte
	chunk := make([]byte, 4096)
	for {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w", agentproto.ErrHandshake, ctx.Err())
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: no answer within %s", agentproto.ErrHandshake, agentproto.HandshakeTimeout)
		}
		_ = conn.SetWriteDeadline(deadline)
		if _, err := conn.Write([]byte(agentproto.HelloPrefix + nonce + "\n")); err != nil {
			return nil, fmt.Errorf("%w: send hello: %w", agentproto.ErrHandshake, err)
		}
		next := time.Now().Add(agentproto.HelloInterval)
		_ = conn.SetReadDeadline(minTime(next, deadline))
		for {
			n, err := conn.Read(chunk)
			buf = append(buf, chunk[:n]...)
			if i := bytes.Index(buf, want); i >= 0 {
				_ = conn.SetDeadline(time.Time{})
				if _, err := conn.Write([]byte(agentproto.StartPrefix + nonce + "\n")); err != nil {
					return nil, fmt.Errorf("%w: send start: %w", agentproto.ErrHandshake, err)
				}
				return bytes.NewReader(buf[i+len(want):]), nil
			}
			// Keep only a tail that could still begin the READY line.
			if len(buf) > len(want) {
				buf = buf[len(buf)-len(want):]
			}
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
					break // resend HELLO
				}
				return nil, fmt.Errorf("%w: %w", agentproto.ErrHandshake, err)
			}
		}
	}
}

// YamuxDialer opens agent streams over one yamux session on a unix socket
// (QEMU's server chardev for the virtio-serial port). The session is made
// on first use and made again whenever it has died; safe for concurrent use.
type YamuxDialer struct {
	connect func(ctx context.Context) (net.Conn, error)
	log     *slog.Logger

	mu     sync.Mutex
	sess   *yamux.Session
	closed bool
}

// NewYamuxDialer returns a dialer for the agent behind socketPath.
func NewYamuxDialer(socketPath string, logger *slog.Logger) *YamuxDialer {
	return newYamuxDialer(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socketPath)
	}, logger)
}

func newYamuxDialer(connect func(ctx context.Context) (net.Conn, error), logger *slog.Logger) *YamuxDialer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &YamuxDialer{connect: connect, log: logger}
}

// Dial opens one stream; it is a Dialer.
func (d *YamuxDialer) Dial(ctx context.Context) (net.Conn, error) {
	var lastErr error
	for range 2 { // a session found dead on open is replaced once
		sess, err := d.session(ctx)
		if err != nil {
			return nil, err
		}
		st, err := sess.OpenStream()
		if err == nil {
			return st, nil
		}
		lastErr = err
		_ = sess.Close()
	}
	return nil, fmt.Errorf("open agent stream: %w", lastErr)
}

func (d *YamuxDialer) session(ctx context.Context) (*yamux.Session, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, agentproto.ErrDialerClosed
	}
	if d.sess != nil && !d.sess.IsClosed() {
		return d.sess, nil
	}
	conn, err := d.connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to agent channel: %w", err)
	}
	start := time.Now()
	rest, err := hostHandshake(ctx, conn)
	if err != nil {
		_ = conn.Close()
		d.log.DebugContext(ctx, "agent handshake failed", "err", err, "duration", time.Since(start))
		return nil, err
	}
	// The session outlives the request that opened it: yamux's own lines
	// carry the session's op_id (bg-agent-…), not that request's.
	sessLog := d.log.With("op_id", opid.NewPrefixed("bg-agent"))
	sess, err := yamux.Client(agentproto.BufferedRWC{Reader: io.MultiReader(rest, conn), RWC: conn}, agentproto.YamuxConfig(sessLog, true))
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("start agent session: %w", err)
	}
	d.log.DebugContext(ctx, "agent session established", "handshake", time.Since(start))
	d.sess = sess
	return sess, nil
}

// Close ends the session; later Dials fail with ErrDialerClosed.
func (d *YamuxDialer) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.sess != nil {
		return d.sess.Close()
	}
	return nil
}

// HybridVsockDialer dials the guest's vsock port through Firecracker's
// hybrid vsock unix socket: "CONNECT <port>\n" answered by "OK <hostport>\n".
func HybridVsockDialer(socketPath string, port uint32) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "unix", socketPath)
		if err != nil {
			return nil, fmt.Errorf("connect to vsock socket: %w", err)
		}
		if err := hybridConnect(ctx, conn, port); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return conn, nil
	}
}

func hybridConnect(ctx context.Context, conn net.Conn, port uint32) error {
	deadline := time.Now().Add(agentproto.HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := fmt.Fprintf(conn, "CONNECT %d\n", port); err != nil {
		return fmt.Errorf("send vsock CONNECT: %w", err)
	}
	// Byte by byte: nothing past the line may be consumed here.
	var line []byte
	var b [1]byte
	for len(line) < 64 {
		if _, err := conn.Read(b[:]); err != nil {
			return fmt.Errorf("%w: read vsock CONNECT answer: %w", agentproto.ErrHandshake, err)
		}
		if b[0] == '\n' {
			fields := strings.Fields(string(line))
			if len(fields) != 2 || fields[0] != "OK" {
				return fmt.Errorf("%w: vsock CONNECT %d answered %q", agentproto.ErrHandshake, port, line)
			}
			if _, err := strconv.ParseUint(fields[1], 10, 32); err != nil {
				return fmt.Errorf("%w: vsock CONNECT %d answered %q", agentproto.ErrHandshake, port, line)
			}
			return conn.SetDeadline(time.Time{})
		}
		line = append(line, b[0])
	}
	return fmt.Errorf("%w: vsock CONNECT answer too long", agentproto.ErrHandshake)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
