package rpc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/progress"
)

// Peer is the kernel-reported identity of the process on the other end of a
// unix socket (SO_PEERCRED): never taken from the request.
type Peer struct {
	PID int32
	UID uint32
	GID uint32
}

// Call is the server side of one request.
type Call struct {
	Method string
	OpID   string
	Params json.RawMessage
	Peer   Peer
	Log    *slog.Logger // carries op_id and method
	// Tracked is the method descriptor's: the call belongs in the
	// operations list.
	Tracked bool

	strict bool // params are decoded strictly (ServerOptions.StrictParams)

	mu   sync.Mutex
	enc  *json.Encoder
	conn *net.UnixConn // nil when not on a unix socket: SendFile fails
	in   <-chan Frame

	observer Observer
}

// Progress streams a progress event to the client.
func (c *Call) Progress(ev progress.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if c.observer != nil {
		c.observer.Progress(ev)
	}
	_ = c.write(Frame{Type: FrameEvent, OpID: c.OpID, Event: &ev})
}

// Observer sees what a call reports about itself (the operations registry
// records target, stage and counters through it).
type Observer interface {
	Progress(progress.Event)
	SetTarget(string)
}

// Observe installs o on this call.
func (c *Call) Observe(o Observer) { c.observer = o }

// SetTarget names what the call works on (a VM, an image), for the
// operations list.
func (c *Call) SetTarget(target string) {
	if c.observer != nil {
		c.observer.SetTarget(target)
	}
}

// ProgressFunc adapts Progress to a progress.Func.
func (c *Call) ProgressFunc() progress.Func { return c.Progress }

// Send streams a data frame to the client.
func (c *Call) Send(kind string, payload any) error {
	raw, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("encode %s frame: %w", kind, err)
	}
	return c.write(Frame{Type: FrameData, OpID: c.OpID, Kind: kind, Payload: raw})
}

// Recv returns the next data frame from the client; io.EOF once it has closed
// its side or the connection is gone.
func (c *Call) Recv(ctx context.Context) (Frame, error) {
	select {
	case f, ok := <-c.in:
		if !ok {
			return Frame{}, io.EOF
		}
		return f, nil
	case <-ctx.Done():
		return Frame{}, ctx.Err()
	}
}

func (c *Call) write(f Frame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.enc.Encode(f)
}

// rawHandler serves one method, its params still raw: Register builds one
// from a typed handler. Its result is marshalled into the result frame;
// its error becomes a typed error frame.
type rawHandler func(ctx context.Context, c *Call) (any, error)

// Hooks observe calls (the daemon's operations registry, metrics).
type Hooks struct {
	// Start is called before the handler; the returned func after it ends.
	Start func(c *Call) (end func(err error))
}

// Server serves a method table on unix sockets.
type Server struct {
	methods   map[string]route
	strict    bool
	log       *slog.Logger
	authorize func(Peer) error
	hooks     Hooks
	limits    limits
	wg        sync.WaitGroup
}

// Defaults for ServerOptions' zero limits: an owner daemon's. The root
// helper sets its own, much smaller, request cap.
const (
	DefaultMaxRequestBytes = 4 << 20
	DefaultMaxFrameBytes   = 1 << 20 // a data frame: 64 KiB of bytes is ~88 KiB of JSON
	DefaultRequestTimeout  = 10 * time.Second
	DefaultMaxConns        = 128
)

// Accept back-off after a transient error (EMFILE, ENFILE, ENOBUFS…):
// doubling from the first to the last, reset by the next good accept.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// refuseWriteTimeout bounds writing a refusal frame: the client may not read.
const refuseWriteTimeout = time.Second

// ServerOptions configure a Server.
type ServerOptions struct {
	Logger *slog.Logger
	// Authorize vets each connection's peer before its request is read; a
	// non-nil error refuses it with permission_denied.
	Authorize func(Peer) error
	Hooks     Hooks
	// StrictParams refuses params with fields the method's request type
	// lacks, or data after them (the root helper: a request it does not
	// fully understand is not acted on). Otherwise unknown fields are
	// ignored, so older servers accept newer clients' optional fields.
	StrictParams bool

	// Limits against a hostile or broken client; zero means the default.
	//
	// MaxRequestBytes caps the request (the first frame); MaxFrameBytes
	// caps each data frame a streaming call receives after it. A bigger
	// frame gets an invalid_argument error frame and the connection ends.
	MaxRequestBytes int64
	MaxFrameBytes   int64
	// RequestTimeout is how long a connection may take to send its whole
	// request. It covers the request only: a stream (exec, logs -f,
	// forward) may then stay quiet for as long as it likes.
	RequestTimeout time.Duration
	// MaxConns caps connections served at once. One more is refused at once
	// with an unavailable error frame rather than queued: the descriptors
	// and goroutines a client can pin stay bounded, and a caller gets a
	// clear answer instead of a hang.
	MaxConns int
}

type limits struct {
	request, frame int64
	timeout        time.Duration
	conns          int
}

// NewServer serves the given method table. Methods registered on it later
// are served too; register them all before Serve.
func NewServer(methods *Methods, opts ServerOptions) *Server {
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	l := limits{request: opts.MaxRequestBytes, frame: opts.MaxFrameBytes, timeout: opts.RequestTimeout, conns: opts.MaxConns}
	if l.request <= 0 {
		l.request = DefaultMaxRequestBytes
	}
	if l.frame <= 0 {
		l.frame = DefaultMaxFrameBytes
	}
	if l.timeout <= 0 {
		l.timeout = DefaultRequestTimeout
	}
	if l.conns <= 0 {
		l.conns = DefaultMaxConns
	}
	return &Server{methods: methods.routes, strict: opts.StrictParams, log: lg, authorize: opts.Authorize, hooks: opts.Hooks, limits: l}
}

// Serve accepts connections until ctx ends or ln is closed, then waits for
// in-flight calls to finish. A transient accept error (out of descriptors
// or memory) backs off and retries: a client that exhausts the process's
// descriptors must not end the server.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	slots := make(chan struct{}, s.limits.conns)
	var backoff time.Duration
	var refused refusalLog
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				s.wg.Wait()
				return nil
			}
			if !transientAcceptError(err) {
				s.wg.Wait()
				return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
			}
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			s.log.Warn("accept failed, retrying", "addr", ln.Addr().String(), "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
			continue
		}
		backoff = 0
		select {
		case slots <- struct{}{}:
		default:
			if refused.note(time.Now()) {
				s.log.Warn("refusing connections: too many in use", "limit", s.limits.conns, "refused", refused.count)
			}
			refuse(conn, api.Errorf(api.CodeUnavailable, "server busy: all %d connections are in use; retry shortly", s.limits.conns))
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-slots }()
			s.serveConn(ctx, conn)
		}()
	}
}

// transientAcceptError reports accept errors that pass: resources run out
// (often because of a client) or the pending connection went away.
func transientAcceptError(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// refusalLog keeps refusals from flooding the log: one line per second.
type refusalLog struct {
	last  time.Time
	count int
}

func (r *refusalLog) note(now time.Time) bool {
	r.count++
	if now.Sub(r.last) < time.Second {
		return false
	}
	r.last = now
	return true
}

// refuse answers a connection that will not be served with e, bounded in
// time, and closes it.
func refuse(conn net.Conn, e *api.Error) {
	_ = conn.SetWriteDeadline(time.Now().Add(refuseWriteTimeout))
	_ = json.NewEncoder(conn).Encode(Frame{Type: FrameError, Error: e})
	conn.Close()
}

// Wait blocks until every in-flight call has returned.
func (s *Server) Wait() { s.wg.Wait() }

// errFrameTooLarge ends a read that passed a frame's byte budget.
var errFrameTooLarge = errors.New("frame too large")

// frameBudget lets the JSON decoder read at most n more bytes from the
// connection; reset before each frame, it caps one frame at about n bytes
// (plus what the decoder had already read ahead, itself bounded) without
// capping the whole stream.
type frameBudget struct {
	r io.Reader
	n int64
}

func (b *frameBudget) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, errFrameTooLarge
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	return n, err
}

func (s *Server) serveConn(parent context.Context, conn net.Conn) {
	defer conn.Close()
	enc := json.NewEncoder(conn)
	// Frames written before the request is accepted go to a client that may
	// not read: bounded, like the request itself.
	_ = conn.SetDeadline(time.Now().Add(s.limits.timeout))
	peer, err := PeerOf(conn)
	if err != nil {
		s.log.Warn("refusing connection: cannot read peer credentials", "err", err)
		_ = enc.Encode(Frame{Type: FrameError, Error: api.Errorf(api.CodePermissionDenied, "cannot read peer credentials")})
		return
	}
	if s.authorize != nil {
		if err := s.authorize(peer); err != nil {
			s.log.Warn("refused connection", "uid", peer.UID, "pid", peer.PID, "err", err)
			_ = enc.Encode(Frame{Type: FrameError, Error: api.Errorf(api.CodePermissionDenied, "%v", err)})
			return
		}
	}

	budget := &frameBudget{r: bufio.NewReaderSize(conn, 64<<10), n: s.limits.request}
	dec := json.NewDecoder(budget)
	var req Request
	if err := dec.Decode(&req); err != nil {
		e := api.Errorf(api.CodeInvalidArgument, "read request: %v", err)
		switch {
		case errors.Is(err, errFrameTooLarge):
			e = api.Errorf(api.CodeInvalidArgument, "request is larger than the %s limit of this server", byteSize(s.limits.request))
		case errors.Is(err, os.ErrDeadlineExceeded):
			e = api.Errorf(api.CodeInvalidArgument, "no complete request within %s: send the request as soon as you connect", s.limits.timeout)
		}
		s.log.Debug("bad request", "uid", peer.UID, "pid", peer.PID, "err", e.Message)
		_ = conn.SetWriteDeadline(time.Now().Add(refuseWriteTimeout)) // the old one may have passed
		_ = enc.Encode(Frame{Type: FrameError, Error: e})
		return
	}
	opID := req.OpID
	if opID == "" {
		opID = NewOpID()
	} else if !ValidOpID(opID) {
		_ = enc.Encode(Frame{Type: FrameError, Error: api.Errorf(api.CodeInvalidArgument, "op_id %q is invalid: use 1-64 characters of [A-Za-z0-9._-]", opID)})
		return
	}
	lg := s.log.With("op_id", opID, "method", req.Method)
	fail := func(e *api.Error) {
		e.OpID = opID
		_ = enc.Encode(Frame{Type: FrameError, OpID: opID, Error: e})
	}
	if req.V > 1 {
		fail(api.Errorf(api.CodeUnimplemented, "request uses protocol version %d, this daemon speaks %d: restart the daemon after upgrading (banger daemon stop)", req.V, 1))
		return
	}
	rt, ok := s.methods[req.Method]
	if !ok {
		fail(api.Errorf(api.CodeUnimplemented, "unknown method %q", req.Method))
		return
	}
	// The request is in: from here on the call (and any stream) has no
	// deadline of its own.
	_ = conn.SetDeadline(time.Time{})

	ctx, cancel := context.WithCancelCause(WithOpID(parent, opID))
	defer cancel(nil)
	in := make(chan Frame, 16)
	uc, _ := conn.(*net.UnixConn)
	call := &Call{Method: req.Method, OpID: opID, Params: req.Params, Peer: peer, Log: lg, Tracked: rt.tracked,
		strict: s.strict, enc: enc, conn: uc, in: in}
	// Reader: data frames from the client until its "eof" frame; a read error
	// or a bare EOF means the client went away, which cancels the call. An
	// over-long frame cancels it with a typed error.
	go func() {
		inOpen := true
		defer func() {
			if inOpen {
				close(in)
			}
		}()
		for {
			var f Frame
			budget.n = s.limits.frame
			if err := dec.Decode(&f); err != nil {
				if errors.Is(err, errFrameTooLarge) {
					cancel(api.Errorf(api.CodeInvalidArgument, "%s: data frame larger than the %s limit of this server", req.Method, byteSize(s.limits.frame)))
					return
				}
				cancel(nil)
				return
			}
			if !inOpen {
				continue
			}
			if f.Type == FrameData && f.Kind == KindEOF {
				close(in)
				inOpen = false
				continue
			}
			select {
			case in <- f:
			case <-ctx.Done():
				return
			}
		}
	}()

	var end func(error)
	if s.hooks.Start != nil {
		end = s.hooks.Start(call)
	}
	start := time.Now()
	lg.Debug("call started", "uid", peer.UID)
	res, herr := safeCall(ctx, rt.handler, call)
	var cause *api.Error
	if errors.As(context.Cause(ctx), &cause) {
		herr = cause // the call was ended for a reason the client must see
	}
	if end != nil {
		end(herr)
	}
	if herr != nil {
		var ae *api.Error
		if !errors.As(herr, &ae) {
			ae = &api.Error{Code: api.CodeInternal, Message: herr.Error()}
		} else {
			cp := *ae
			ae = &cp
			if msg := herr.Error(); msg != ae.Error() {
				ae.Message = msg // keep the wrapping context
			}
		}
		if errors.Is(herr, context.Canceled) && ae.Code == api.CodeInternal {
			ae.Code = api.CodeCanceled
		}
		lg.Info("call failed", "code", ae.Code, "err", ae.Message, "duration", time.Since(start))
		fail(ae)
		return
	}
	raw, err := json.Marshal(res)
	if err != nil {
		fail(api.Errorf(api.CodeInternal, "encode result: %v", err))
		return
	}
	lg.Debug("call finished", "duration", time.Since(start))
	_ = call.write(Frame{Type: FrameResult, OpID: opID, Result: raw})
}

// byteSize renders a limit for an error message: "512 KiB", "4 MiB".
func byteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func safeCall(ctx context.Context, h rawHandler, c *Call) (res any, err error) {
	defer func() {
		if r := recover(); r != nil {
			c.Log.Error("handler panicked", "panic", r)
			err = api.Errorf(api.CodeInternal, "%s: internal error (panic: %v)", c.Method, r)
		}
	}()
	return h(ctx, c)
}

// PeerOf reads SO_PEERCRED from a unix connection.
func PeerOf(conn net.Conn) (Peer, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return Peer{}, fmt.Errorf("not a unix connection: %T", conn)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{}, err
	}
	if serr != nil {
		return Peer{}, serr
	}
	return Peer{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}
