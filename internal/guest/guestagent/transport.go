package guestagent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/bangerdev/banger/internal/opid"
)

// VirtioPortName is the virtio-serial port name QEMU is given
// (virtserialport,name=banger.agent); the guest finds it under /dev/virtio-ports.
const VirtioPortName = "banger.agent"

// Handshake lines that open a session on the shared virtio-serial channel
// (see doc.go). The host repeats HELLO until it reads READY with its nonce.
const (
	helloPrefix = "BANGER-AGENT-HELLO 1 "
	readyPrefix = "BANGER-AGENT-READY 1 "
	startPrefix = "BANGER-AGENT-START 1 "
)

const (
	helloInterval    = 250 * time.Millisecond
	handshakeTimeout = 10 * time.Second
	portBackoffMin   = 50 * time.Millisecond
	portBackoffMax   = 500 * time.Millisecond
)

var (
	// ErrHandshake reports a channel on which no agent answered the handshake.
	ErrHandshake = errors.New("agent handshake failed")
	// ErrDialerClosed is returned by a closed YamuxDialer.
	ErrDialerClosed = errors.New("agent dialer closed")
)

// Dialer opens a fresh stream to the agent; each request uses one.
type Dialer func(ctx context.Context) (net.Conn, error)

func yamuxConfig(logger *slog.Logger, host bool) *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = nil
	cfg.Logger = log.New(slogWriter{logger}, "yamux: ", 0)
	if host {
		// A guest that rebooted behind a live chardev never answers: find out
		// fast and reconnect, rather than hang requests.
		cfg.KeepAliveInterval = 5 * time.Second
		cfg.ConnectionWriteTimeout = 5 * time.Second
		cfg.StreamOpenTimeout = 10 * time.Second
	}
	return cfg
}

type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Debug(strings.TrimSpace(string(p)))
	return len(p), nil
}

// bufferedRWC reads through r (which may hold bytes read past a handshake)
// and writes and closes the underlying channel.
type bufferedRWC struct {
	io.Reader
	rwc io.ReadWriteCloser
}

func (b bufferedRWC) Write(p []byte) (int, error) { return b.rwc.Write(p) }
func (b bufferedRWC) Close() error                { return b.rwc.Close() }

// OpenVirtioPort returns the open function for ServePort that opens the
// guest end of the named virtio-serial port.
func OpenVirtioPort(name string) func() (io.ReadWriteCloser, error) {
	path := "/dev/virtio-ports/" + name
	return func() (io.ReadWriteCloser, error) {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("open agent port: %w", err)
		}
		return f, nil
	}
}

// ServePort serves the agent on a byte channel shared with the host (a
// virtio-serial port): it opens it, runs ServeConn, and when the session
// ends (the host disconnected or reconnected) reopens it after a bounded
// backoff, until ctx ends. This is what the guest's init calls when there
// is no vsock: srv.ServePort(ctx, OpenVirtioPort(VirtioPortName)).
func (s *Server) ServePort(ctx context.Context, open func() (io.ReadWriteCloser, error)) error {
	var handlers sync.WaitGroup
	defer handlers.Wait()
	wait := portBackoffMin
	for ctx.Err() == nil {
		port, err := open()
		if err != nil {
			s.log.Debug("open agent channel", "err", err)
		} else {
			established, err := s.serveConn(ctx, port, &handlers)
			if established {
				wait = portBackoffMin
			}
			s.log.Debug("agent channel session ended", "err", err, "established", established)
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(wait*2, portBackoffMax)
	}
	return nil
}

// ServeConn runs one session on rwc: it waits for the host's handshake,
// then serves a yamux session (the guest accepts the streams) until it ends
// or ctx does (a host hanging up is a normal end: nil). rwc is closed on
// return. Reads that return EOF while the host is disconnected end the
// call; ServePort is the loop that reconnects.
func (s *Server) ServeConn(ctx context.Context, rwc io.ReadWriteCloser) error {
	var handlers sync.WaitGroup
	defer handlers.Wait()
	_, err := s.serveConn(ctx, rwc, &handlers)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// serveConn returns as soon as the session ends. Its handlers are told to
// stop (their ctx is cancelled) but not waited for: the caller waits on
// handlers. A handler slow to wind down (an exec in its kill grace, a
// forward whose TCP peer keeps its side open) must not keep the port
// closed, or every later handshake of a reconnecting host goes unanswered.
func (s *Server) serveConn(ctx context.Context, rwc io.ReadWriteCloser, handlers *sync.WaitGroup) (established bool, err error) {
	stop := context.AfterFunc(ctx, func() { _ = rwc.Close() })
	defer stop()
	defer rwc.Close()
	br := bufio.NewReaderSize(rwc, 64<<10)
	if err := guestHandshake(br, rwc); err != nil {
		return false, err
	}
	sess, err := yamux.Server(bufferedRWC{br, rwc}, yamuxConfig(s.log, false))
	if err != nil {
		return false, fmt.Errorf("start agent session: %w", err)
	}
	s.log.Info("agent session established")
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err = s.serve(sctx, sess, handlers)
	_ = sess.Close()
	if errors.Is(err, io.EOF) || errors.Is(err, yamux.ErrSessionShutdown) {
		return true, nil // the host hung up: a normal end
	}
	return true, err
}

// guestHandshake scans the channel for the host's HELLO (skipping any stale
// bytes), answers READY once per nonce, and returns after START. A host that
// says HELLO but never START (it died mid-way) makes the call fail after
// handshakeTimeout, by closing rwc.
func guestHandshake(br *bufio.Reader, rwc io.ReadWriteCloser) error {
	nonce := ""
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			continue // garbage without newlines: keep scanning
		}
		if err != nil {
			return fmt.Errorf("wait for host handshake: %w", err)
		}
		if n, ok := handshakeField(line, helloPrefix); ok {
			if n == nonce {
				continue // a repeated HELLO; READY is already on its way
			}
			nonce = n
			if _, err := rwc.Write([]byte(readyPrefix + nonce + "\n")); err != nil {
				return fmt.Errorf("answer host handshake: %w", err)
			}
			if timer == nil {
				timer = time.AfterFunc(handshakeTimeout, func() { _ = rwc.Close() })
			} else {
				timer.Reset(handshakeTimeout)
			}
			continue
		}
		if n, ok := handshakeField(line, startPrefix); ok && nonce != "" && n == nonce {
			return nil
		}
	}
}

// handshakeField finds prefix in line (stale bytes may precede it) and
// returns the nonce after it.
func handshakeField(line []byte, prefix string) (string, bool) {
	i := bytes.Index(line, []byte(prefix))
	if i < 0 {
		return "", false
	}
	n := strings.TrimSpace(string(line[i+len(prefix):]))
	if n == "" || len(n) > 64 {
		return "", false
	}
	return n, true
}

// hostHandshake opens a session on conn: HELLO (repeated) until READY with
// our nonce, then START. Returns a reader holding any byte read past READY.
func hostHandshake(ctx context.Context, conn net.Conn) (io.Reader, error) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	nonce := hex.EncodeToString(b[:])
	deadline := time.Now().Add(handshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	want := []byte(readyPrefix + nonce + "\n")
	var buf []byte
	chunk := make([]byte, 4096)
	for {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w", ErrHandshake, ctx.Err())
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: no answer within %s", ErrHandshake, handshakeTimeout)
		}
		_ = conn.SetWriteDeadline(deadline)
		if _, err := conn.Write([]byte(helloPrefix + nonce + "\n")); err != nil {
			return nil, fmt.Errorf("%w: send hello: %w", ErrHandshake, err)
		}
		next := time.Now().Add(helloInterval)
		_ = conn.SetReadDeadline(minTime(next, deadline))
		for {
			n, err := conn.Read(chunk)
			buf = append(buf, chunk[:n]...)
			if i := bytes.Index(buf, want); i >= 0 {
				_ = conn.SetDeadline(time.Time{})
				if _, err := conn.Write([]byte(startPrefix + nonce + "\n")); err != nil {
					return nil, fmt.Errorf("%w: send start: %w", ErrHandshake, err)
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
				return nil, fmt.Errorf("%w: %w", ErrHandshake, err)
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
		return nil, ErrDialerClosed
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
	sess, err := yamux.Client(bufferedRWC{io.MultiReader(rest, conn), conn}, yamuxConfig(sessLog, true))
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
	deadline := time.Now().Add(handshakeTimeout)
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
			return fmt.Errorf("%w: read vsock CONNECT answer: %w", ErrHandshake, err)
		}
		if b[0] == '\n' {
			fields := strings.Fields(string(line))
			if len(fields) != 2 || fields[0] != "OK" {
				return fmt.Errorf("%w: vsock CONNECT %d answered %q", ErrHandshake, port, line)
			}
			if _, err := strconv.ParseUint(fields[1], 10, 32); err != nil {
				return fmt.Errorf("%w: vsock CONNECT %d answered %q", ErrHandshake, port, line)
			}
			return conn.SetDeadline(time.Time{})
		}
		line = append(line, b[0])
	}
	return fmt.Errorf("%w: vsock CONNECT answer too long", ErrHandshake)
}
