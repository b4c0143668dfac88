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
	"sync"
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

	mu   sync.Mutex
	enc  *json.Encoder
	conn *net.UnixConn // nil when not on a unix socket: SendFile fails
	in   <-chan Frame

	observer Observer
}

// Decode unmarshals the request's params into v, as an invalid_argument error.
func (c *Call) Decode(v any) error {
	if len(c.Params) == 0 {
		return nil
	}
	if err := json.Unmarshal(c.Params, v); err != nil {
		return api.Errorf(api.CodeInvalidArgument, "%s: bad params: %v", c.Method, err)
	}
	return nil
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

// Handler serves one method. Its result is marshalled into the result frame;
// its error becomes a typed error frame.
type Handler func(ctx context.Context, c *Call) (any, error)

// Hooks observe calls (the daemon's operations registry, metrics).
type Hooks struct {
	// Start is called before the handler; the returned func after it ends.
	Start func(c *Call) (end func(err error))
}

// Server serves a method table on unix sockets.
type Server struct {
	methods   map[string]Handler
	log       *slog.Logger
	authorize func(Peer) error
	hooks     Hooks
	wg        sync.WaitGroup
}

// ServerOptions configure a Server.
type ServerOptions struct {
	Logger *slog.Logger
	// Authorize vets each connection's peer before its request is read; a
	// non-nil error refuses it with permission_denied.
	Authorize func(Peer) error
	Hooks     Hooks
}

// NewServer serves the given method table.
func NewServer(methods map[string]Handler, opts ServerOptions) *Server {
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	return &Server{methods: methods, log: lg, authorize: opts.Authorize, hooks: opts.Hooks}
}

// Serve accepts connections until ctx ends or ln is closed, then waits for
// in-flight calls to finish.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			s.wg.Wait()
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, conn)
		}()
	}
}

// Wait blocks until every in-flight call has returned.
func (s *Server) Wait() { s.wg.Wait() }

func (s *Server) serveConn(parent context.Context, conn net.Conn) {
	defer conn.Close()
	enc := json.NewEncoder(conn)
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

	br := bufio.NewReaderSize(conn, 64<<10)
	dec := json.NewDecoder(io.LimitReader(br, MaxFrame*64))
	var req Request
	if err := dec.Decode(&req); err != nil {
		_ = enc.Encode(Frame{Type: FrameError, Error: api.Errorf(api.CodeInvalidArgument, "read request: %v", err)})
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
	h, ok := s.methods[req.Method]
	if !ok {
		fail(api.Errorf(api.CodeUnimplemented, "unknown method %q", req.Method))
		return
	}

	ctx, cancel := context.WithCancel(WithOpID(parent, opID))
	defer cancel()
	in := make(chan Frame, 16)
	uc, _ := conn.(*net.UnixConn)
	call := &Call{Method: req.Method, OpID: opID, Params: req.Params, Peer: peer, Log: lg, enc: enc, conn: uc, in: in}
	// Reader: data frames from the client until its "eof" frame; a read error
	// or a bare EOF means the client went away, which cancels the call.
	go func() {
		inOpen := true
		defer func() {
			if inOpen {
				close(in)
			}
		}()
		for {
			var f Frame
			if err := dec.Decode(&f); err != nil {
				cancel()
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
	res, herr := safeCall(ctx, h, call)
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

func safeCall(ctx context.Context, h Handler, c *Call) (res any, err error) {
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
