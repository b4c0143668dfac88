package agentclient

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/opid"
)

// Client talks to one guest's agent, opening one stream per request. The
// op_id carried by ctx (opid.With) is sent with every request.
type Client struct {
	dial Dialer
	log  *slog.Logger
}

// NewClient returns a client that opens its streams with dial.
func NewClient(dial Dialer, logger *slog.Logger) *Client {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Client{dial: dial, log: logger}
}

// call opens a stream, sends the request and reads the response line into
// result. On success the stream is left open for the method's frames.
func (c *Client) call(ctx context.Context, method string, params, result any) (*agentproto.Stream, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: dial agent: %w", method, err)
	}
	st := agentproto.NewStream(conn)
	// Until the response line is in, ctx bounds the exchange.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	req := agentproto.Request{V: agentproto.ProtocolVersion, Method: method, OpID: opid.From(ctx)}
	if params != nil {
		if req.Params, err = json.Marshal(params); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("%s: encode params: %w", method, err)
		}
	}
	if err := st.WriteLine(req); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("%s: send request: %w", method, ctxOr(ctx, err))
	}
	var resp agentproto.Response
	if err := st.ReadLine(&resp); err != nil {
		_ = conn.Close()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = agentproto.ErrConnectionLost
		}
		return nil, fmt.Errorf("%s: read response: %w", method, ctxOr(ctx, err))
	}
	if resp.Error != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("%s: %w", method, agentproto.Tame(resp.Error))
	}
	if result != nil && len(resp.Result) > 0 {
		if err := json.Unmarshal(resp.Result, result); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("%s: decode result: %w", method, err)
		}
	}
	if !stop() { // ctx ended while the line came in: the deadline is set
		_ = conn.Close()
		return nil, fmt.Errorf("%s: %w", method, ctx.Err())
	}
	return st, nil
}

// abort ends a stream in both directions at once: on yamux, Close alone is
// a half-close and reads would go on.
func abort(st *agentproto.Stream) {
	_ = st.Conn.SetDeadline(time.Now())
	_ = st.Close()
}

// ctxOr prefers ctx's error: a deadline we set to honour ctx shows as a timeout.
func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// unary runs a request whose whole answer is the response line.
func (c *Client) unary(ctx context.Context, method string, params, result any) error {
	st, err := c.call(ctx, method, params, result)
	if err != nil {
		return err
	}
	return st.Close()
}

// Health asks the agent for its identity; an answer means the guest is ready.
func (c *Client) Health(ctx context.Context) (agentproto.Health, error) {
	var h agentproto.Health
	err := c.unary(ctx, agentproto.MethodHealth, nil, &h)
	return h, err
}

// Ports lists the guest's listening sockets.
func (c *Client) Ports(ctx context.Context) ([]agentproto.Port, error) {
	var ports []agentproto.Port
	err := c.unary(ctx, agentproto.MethodPortsList, nil, &ports)
	return ports, err
}

// Poweroff asks the guest to power off gracefully; it returns once the
// agent has accepted the request, not when the guest is down.
func (c *Client) Poweroff(ctx context.Context) error {
	return c.unary(ctx, agentproto.MethodPoweroff, nil, nil)
}

// SetClock steps the guest's wall clock to t (after a resume).
func (c *Client) SetClock(ctx context.Context, t time.Time) error {
	return c.unary(ctx, agentproto.MethodClockSet, agentproto.ClockSet{UnixNano: t.UnixNano()}, nil)
}

// WatchPorts calls fn with the full list of listening sockets, first at
// once and then whenever it changes, until ctx ends (returning nil) or the
// Stream fails. fn runs on the caller's goroutine, one call at a time.
func (c *Client) WatchPorts(ctx context.Context, fn func([]agentproto.Port)) error {
	st, err := c.call(ctx, agentproto.MethodPortsWatch, nil, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { abort(st) })
	defer stop()
	for {
		t, payload, err := st.ReadFrame()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch ports: %w", lostIfEOF(err))
		}
		switch t {
		case agentproto.FrameSnapshot:
			var ports []agentproto.Port
			if err := json.Unmarshal(payload, &ports); err != nil {
				return fmt.Errorf("watch ports: decode snapshot: %w", err)
			}
			fn(ports)
		case agentproto.FrameError:
			return fmt.Errorf("watch ports: %w", agentproto.DecodeErrorFrame(payload))
		}
	}
}

func lostIfEOF(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return agentproto.ErrConnectionLost
	}
	return err
}

// Exec runs req in the guest. stdin (nil for none) is streamed to the
// process and its end closes the process's stdin; stdout and stderr (nil
// discards) receive its output (with a tty, everything arrives on stdout).
// Sizes from resize and signals from signals (SIGINT, SIGTERM, SIGKILL,
// SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2) are forwarded; either may be nil. The
// exit code is 128+N for a process killed by signal N. If ctx ends, the
// Stream is closed and the agent hangs up on the process (SIGHUP, then
// SIGKILL). A stdin that blocks in Read is not waited for: Exec returns
// when the process has exited, and the copier stops at its next read.
func (c *Client) Exec(ctx context.Context, req agentproto.ExecRequest, stdin io.Reader, stdout, stderr io.Writer,
	resize <-chan agentproto.WinSize, signals <-chan os.Signal) (int, error) {
	st, err := c.call(ctx, agentproto.MethodExec, req, nil)
	if err != nil {
		return -1, err
	}
	send := func(st *agentproto.Stream, finished <-chan struct{}) { sendStdin(st, stdin, finished) }
	return relayExec(ctx, st, "exec", send, stdout, stderr, resize, signals, nil)
}

// relayExec carries an exec-like stream (exec, session.attach) until its
// exit frame: stdin, sizes and signals out; output, lost counts (onLost,
// may be nil) and the exit code in. sendIn (nil: none) streams stdin until
// finished is closed.
func relayExec(ctx context.Context, st *agentproto.Stream, what string, sendIn func(*agentproto.Stream, <-chan struct{}), stdout, stderr io.Writer,
	resize <-chan agentproto.WinSize, signals <-chan os.Signal, onLost func(uint64)) (int, error) {
	defer st.Close()
	finished := make(chan struct{})
	defer close(finished)
	stop := context.AfterFunc(ctx, func() { abort(st) })
	defer stop()

	if sendIn != nil {
		go sendIn(st, finished)
	}
	go func() {
		for {
			select {
			case <-finished:
				return
			case ws, ok := <-resize:
				if !ok {
					resize = nil
					continue
				}
				var b [4]byte
				binary.BigEndian.PutUint16(b[:], ws.Rows)
				binary.BigEndian.PutUint16(b[2:], ws.Cols)
				_ = st.WriteFrame(agentproto.FrameResize, b[:])
			case sig, ok := <-signals:
				if !ok {
					signals = nil
					continue
				}
				if name := signalName(sig); name != "" {
					_ = st.WriteFrame(agentproto.FrameSignal, []byte(name))
				}
			}
		}
	}()

	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	for {
		t, payload, err := st.ReadFrame()
		if ctx.Err() != nil {
			return -1, fmt.Errorf("%s: %w", what, ctx.Err())
		}
		if err != nil {
			return -1, fmt.Errorf("%s: %w", what, lostIfEOF(err))
		}
		switch t {
		case agentproto.FrameStdout:
			_, _ = stdout.Write(payload) // a failing writer must not stall the process
		case agentproto.FrameStderr:
			_, _ = stderr.Write(payload)
		case agentproto.FrameLost:
			if onLost != nil && len(payload) == 8 {
				onLost(binary.BigEndian.Uint64(payload))
			}
		case agentproto.FrameExit:
			if len(payload) != 4 {
				return -1, fmt.Errorf("%s: malformed exit frame", what)
			}
			return int(int32(binary.BigEndian.Uint32(payload))), nil
		case agentproto.FrameError:
			return -1, fmt.Errorf("%s: %w", what, agentproto.DecodeErrorFrame(payload))
		}
	}
}

func sendStdin(st *agentproto.Stream, stdin io.Reader, finished <-chan struct{}) {
	if stdin != nil {
		buf := make([]byte, agentproto.ChunkSize)
		for {
			n, err := stdin.Read(buf)
			if n > 0 {
				select {
				case <-finished:
					return
				default:
				}
				if st.WriteFrame(agentproto.FrameStdin, buf[:n]) != nil {
					return
				}
			}
			if err != nil {
				break
			}
		}
	}
	_ = st.WriteFrame(agentproto.FrameEOF, nil)
}

func signalName(sig os.Signal) string {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return ""
	}
	for name, v := range agentproto.SignalsByName {
		if v == s {
			return name
		}
	}
	return ""
}

// CopyOut streams guestPath (file, directory or symlink, never followed)
// from the guest to w as a tar archive.
func (c *Client) CopyOut(ctx context.Context, guestPath string, w io.Writer) error {
	st, err := c.call(ctx, agentproto.MethodCopyOut, agentproto.CopyOutParams{Path: guestPath}, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { abort(st) })
	defer stop()
	for {
		t, payload, err := st.ReadFrame()
		if err != nil {
			return fmt.Errorf("copy out %s: %w", guestPath, ctxOr(ctx, lostIfEOF(err)))
		}
		switch t {
		case agentproto.FrameData:
			if _, err := w.Write(payload); err != nil {
				return fmt.Errorf("copy out %s: write: %w", guestPath, err)
			}
		case agentproto.FrameEOF:
			return nil
		case agentproto.FrameError:
			return fmt.Errorf("copy out %s: %w", guestPath, agentproto.DecodeErrorFrame(payload))
		}
	}
}

// CopyIn streams the tar archive r into guestDir (created if missing);
// the guest extracts only name and what is beneath it (see ExtractTar).
func (c *Client) CopyIn(ctx context.Context, guestDir, name string, r io.Reader) error {
	st, err := c.call(ctx, agentproto.MethodCopyIn, agentproto.CopyInParams{Dir: guestDir, Name: name}, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { abort(st) })
	defer stop()
	sendErr := make(chan error, 1)
	go func() {
		if _, err := io.Copy(agentproto.FrameWriter{S: st, T: agentproto.FrameData}, r); err != nil {
			_ = st.WriteJSONFrame(agentproto.FrameError, agentproto.Errorf(agentproto.CodeIO, "read archive on host: %v", err))
			sendErr <- err
			return
		}
		sendErr <- st.WriteFrame(agentproto.FrameEOF, nil)
	}()
	// The guest answers once it has the whole archive, or as soon as it
	// fails; r is not waited for then (a Read may block for ever).
	t, payload, err := st.ReadFrame()
	switch {
	case err != nil:
		select {
		case serr := <-sendErr:
			if serr != nil {
				return fmt.Errorf("copy in %s: %w", guestDir, serr)
			}
		default:
		}
		return fmt.Errorf("copy in %s: %w", guestDir, ctxOr(ctx, lostIfEOF(err)))
	case t == agentproto.FrameDone:
		return nil
	case t == agentproto.FrameError:
		return fmt.Errorf("copy in %s: %w", guestDir, agentproto.DecodeErrorFrame(payload))
	}
	return fmt.Errorf("copy in %s: unexpected frame %q", guestDir, t)
}

// CopyPathIn archives the local path (see WriteTar) into guestDir.
func (c *Client) CopyPathIn(ctx context.Context, localPath, guestDir string) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(agentproto.WriteTar(ctx, pw, localPath)) }()
	err := c.CopyIn(ctx, guestDir, agentproto.BaseName(filepath.ToSlash(localPath)), pr)
	_ = pr.Close()
	return err
}

// CopyPathOut copies guestPath into the local directory localDir. The
// guest's archive is hostile input: only guestPath's base name and what is
// beneath it are written, within lim (see ExtractTar).
func (c *Client) CopyPathOut(ctx context.Context, guestPath, localDir string, lim agentproto.CopyLimits) error {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := agentproto.ExtractTar(ctx, pr, localDir, agentproto.BaseName(guestPath), lim)
		if err == nil {
			_, err = io.Copy(io.Discard, pr)
		}
		pr.CloseWithError(err)
		done <- err
	}()
	err := c.CopyOut(ctx, guestPath, pw)
	pw.CloseWithError(err)
	xerr := <-done
	switch {
	case errors.Is(xerr, agentproto.ErrUnsafePath), errors.Is(xerr, agentproto.ErrUnsafeEntry), errors.Is(xerr, agentproto.ErrArchiveLimit):
		// The cause, rather than the failed write it made of the transfer.
		return fmt.Errorf("refused the guest's archive of %s (nothing of it was kept in %s): %w", guestPath, localDir, xerr)
	case xerr != nil && err == nil:
		return fmt.Errorf("extract into %s: %w", localDir, xerr)
	}
	return err
}

// Forward opens one TCP connection from the guest to addr ("port",
// ":port" or "host:port"; the host defaults to the guest's 127.0.0.1) and
// returns it. CloseWrite half-closes; Close ends both directions.
func (c *Client) Forward(ctx context.Context, addr string) (net.Conn, error) {
	st, err := c.call(ctx, agentproto.MethodForward, agentproto.ForwardParams{Addr: addr}, nil)
	if err != nil {
		return nil, err
	}
	return &forwardConn{Stream: st}, nil
}

// forwardConn is a forwarded connection. Close must end the reads too: on a
// yamux stream Close alone is only a half-close.
type forwardConn struct {
	*agentproto.Stream
}

func (f *forwardConn) Close() error {
	abort(f.Stream)
	return nil
}
