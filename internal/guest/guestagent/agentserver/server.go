package agentserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
)

// ServerOptions configures the guest side.
type ServerOptions struct {
	Logger    *slog.Logger
	BootID    string
	Version   string
	StartTime time.Time // uptime is measured from here (the guest's boot)
	// Poweroff is called after system.poweroff has been answered; nil means
	// the method answers CodeUnsupported.
	Poweroff func(ctx context.Context) error
	// SetClock steps the guest's wall clock (system.clock_set); nil means
	// the method answers CodeUnsupported.
	SetClock func(t time.Time) error
	// KillGrace is how long a process whose host stream died has between
	// SIGHUP and SIGKILL (default 2s).
	KillGrace time.Duration
	// PortsInterval is the ports.watch poll period (default 500ms).
	PortsInterval time.Duration
	// CopyLimits bound an fs.copy_in archive (zero: the defaults).
	CopyLimits agentproto.CopyLimits
	// Freeze, Thaw and Reidentify serve snapshots and clones (identity.go);
	// nil means the method answers CodeUnsupported.
	Freeze     FreezeFunc
	Thaw       ThawFunc
	Reidentify ReidentifyFunc
}

// Server answers agent requests inside the guest.
type Server struct {
	opts     ServerOptions
	log      *slog.Logger
	sessions sessionTable // exec sessions that outlive their host stream
	// bootID is what health answers: opts.BootID until a clone is handed
	// its own (system.reidentify).
	bootID atomic.Pointer[string]
	// trackers follow directories fs.manifest listed (sync_track.go).
	trackers trackerTable
}

// NewServer returns a server; it serves nothing until Serve or ServePort.
func NewServer(opts ServerOptions) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.StartTime.IsZero() {
		opts.StartTime = time.Now()
	}
	if opts.KillGrace <= 0 {
		opts.KillGrace = 2 * time.Second
	}
	if opts.PortsInterval <= 0 {
		opts.PortsInterval = 500 * time.Millisecond
	}
	srv := &Server{opts: opts, log: opts.Logger}
	srv.bootID.Store(&opts.BootID)
	return srv
}

// Serve answers one request per accepted connection until ctx ends or ln
// fails; ln is closed when Serve returns. Handlers still running when ctx
// ends are stopped (their processes killed) and waited for.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var handlers sync.WaitGroup
	defer handlers.Wait()
	return s.serve(ctx, ln, &handlers)
}

// serve is Serve without the final wait: handlers counts the running ones.
func (s *Server) serve(ctx context.Context, ln net.Listener, handlers *sync.WaitGroup) error {
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	defer ln.Close()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept agent connection: %w", err)
		}
		handlers.Add(1)
		go func() {
			defer handlers.Done()
			s.handle(ctx, conn)
		}()
	}
}

type handlerFunc func(ctx context.Context, st *agentproto.Stream, log *slog.Logger, params json.RawMessage) error

func (s *Server) handlers() map[string]handlerFunc {
	return map[string]handlerFunc{
		agentproto.MethodHealth:     s.handleHealth,
		agentproto.MethodExec:       s.handleExec,
		agentproto.MethodPortsList:  s.handlePortsList,
		agentproto.MethodPortsWatch: s.handlePortsWatch,
		agentproto.MethodCopyOut:    s.handleCopyOut,
		agentproto.MethodCopyIn:     s.handleCopyIn,
		agentproto.MethodForward:    s.handleForward,
		agentproto.MethodPoweroff:   s.handlePoweroff,
		agentproto.MethodClockSet:   s.handleClockSet,
		// Sessions (session_server.go).
		agentproto.MethodSessionStart:  s.handleSessionStart,
		agentproto.MethodSessionAttach: s.handleSessionAttach,
		agentproto.MethodSessionList:   s.handleSessionList,
		agentproto.MethodFreeze:        s.handleFreeze,
		agentproto.MethodThaw:          s.handleThaw,
		agentproto.MethodReidentify:    s.handleReidentify,
		// vm sync (sync.go).
		agentproto.MethodManifest: s.handleManifest,
		agentproto.MethodRemove:   s.handleRemove,
	}
}

// handle serves one request on conn and closes it.
func (s *Server) handle(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A server shutting down closes the stream, which ends every handler.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	st := agentproto.NewStream(conn)
	_ = conn.SetReadDeadline(time.Now().Add(agentproto.HeaderTimeout))
	var req agentproto.Request
	if err := st.ReadLine(&req); err != nil {
		s.log.Debug("read agent request", "err", err)
		_ = st.WriteLine(agentproto.Response{Error: agentproto.Errorf(agentproto.CodeBadRequest, "read request: %v", err)})
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	log := s.log.With("op_id", req.OpID, "method", req.Method)
	if req.V != agentproto.ProtocolVersion {
		_ = st.WriteLine(agentproto.Response{Error: agentproto.Errorf(agentproto.CodeBadRequest, "protocol version %d not supported (want %d)", req.V, agentproto.ProtocolVersion)})
		return
	}
	h, ok := s.handlers()[req.Method]
	if !ok {
		_ = st.WriteLine(agentproto.Response{Error: agentproto.Errorf(agentproto.CodeUnknownMethod, "unknown method %q", req.Method)})
		return
	}
	start := time.Now()
	err := h(ctx, st, log, req.Params)
	if err != nil {
		log.Warn("agent request failed", "err", err, "duration", time.Since(start))
		return
	}
	log.Debug("agent request done", "duration", time.Since(start))
}

// Respond writes the success line.
func Respond(st *agentproto.Stream, result any) error {
	b, err := json.Marshal(result)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	return st.WriteLine(agentproto.Response{Result: b})
}

// fail writes err as the response line (before any frame) and returns it.
func fail(st *agentproto.Stream, err error) error {
	_ = st.WriteLine(agentproto.Response{Error: asAgentError(err)})
	return err
}

// failFrame reports err as the last frame of a streaming method.
func failFrame(st *agentproto.Stream, err error) error {
	_ = st.WriteJSONFrame(agentproto.FrameError, asAgentError(err))
	return err
}

func asAgentError(err error) *agentproto.Error {
	var ae *agentproto.Error
	if errors.As(err, &ae) {
		return ae
	}
	if errors.Is(err, os.ErrNotExist) {
		return &agentproto.Error{Code: agentproto.CodeNotFound, Message: err.Error()}
	}
	return &agentproto.Error{Code: agentproto.CodeInternal, Message: err.Error()}
}

func decodeParams(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return agentproto.Errorf(agentproto.CodeBadRequest, "decode params: %v", err)
	}
	return nil
}

func (s *Server) handleHealth(_ context.Context, st *agentproto.Stream, _ *slog.Logger, _ json.RawMessage) error {
	return Respond(st, agentproto.Health{
		BootID:        *s.bootID.Load(),
		UptimeSeconds: time.Since(s.opts.StartTime).Seconds(),
		Version:       s.opts.Version,
		PID:           os.Getpid(),
	})
}

func (s *Server) handlePoweroff(ctx context.Context, st *agentproto.Stream, log *slog.Logger, _ json.RawMessage) error {
	if s.opts.Poweroff == nil {
		return fail(st, agentproto.Errorf(agentproto.CodeUnsupported, "this agent cannot power the guest off"))
	}
	if err := Respond(st, struct{}{}); err != nil {
		return err
	}
	// The answer must leave before the guest goes down: wait (briefly) for
	// the host to close its side, which it does once it has read it.
	_ = st.Conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, _ = st.R.ReadByte()
	_ = st.Close()
	log.Info("power-off requested by host")
	// Not tied to the request's ctx: the power-off outlives this stream.
	if err := s.opts.Poweroff(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("power off: %w", err)
	}
	return nil
}

// clockSetBounds is the range of times system.clock_set accepts: a host
// clock outside it is broken, and stepping the guest there would only
// break TLS and make in the guest.
var clockSetBounds = [2]time.Time{
	time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
	time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC),
}

func (s *Server) handleClockSet(_ context.Context, st *agentproto.Stream, log *slog.Logger, params json.RawMessage) error {
	if s.opts.SetClock == nil {
		return fail(st, agentproto.Errorf(agentproto.CodeUnsupported, "this agent cannot set the guest's clock"))
	}
	var p agentproto.ClockSet
	if err := decodeParams(params, &p); err != nil {
		return fail(st, err)
	}
	t := time.Unix(0, p.UnixNano)
	if p.UnixNano == 0 || t.Before(clockSetBounds[0]) || t.After(clockSetBounds[1]) {
		return fail(st, agentproto.Errorf(agentproto.CodeBadRequest, "clock time %d ns is outside %s..%s", p.UnixNano,
			clockSetBounds[0].Format(time.DateOnly), clockSetBounds[1].Format(time.DateOnly)))
	}
	before := time.Now()
	if err := s.opts.SetClock(t); err != nil {
		return fail(st, agentproto.Errorf(agentproto.CodeIO, "set clock: %v", err))
	}
	log.Info("clock stepped by host", "by", t.Sub(before).Round(time.Millisecond))
	return Respond(st, struct{}{})
}
