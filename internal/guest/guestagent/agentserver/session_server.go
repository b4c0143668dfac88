package agentserver

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/guest/sessionstream"
)

// sessionTable holds the agent's sessions, oldest first.
type sessionTable struct {
	startMu sync.Mutex // serialises session.start
	mu      sync.Mutex
	list    []*session
}

// session is a process the agent keeps running with its output in a
// replay ring, for clients that attach and detach at will.
type session struct {
	id      string
	argv    []string
	tty     bool
	stdin   bool
	started time.Time
	proc    *execProc
	out     *sessionstream.Stream
	log     *slog.Logger

	stdinCh   chan []byte   // chunks for the process; nil means end of stdin
	stdinDone chan struct{} // closed when stdin is closed for good
	stdinOnce sync.Once
	finished  chan struct{} // closed once the exit is recorded and output ended

	mu      sync.Mutex
	ended   time.Time
	code    int
	clients int
}

// makeRoom drops the oldest finished session when the table is full, or
// fails when every session is still running.
func (t *sessionTable) makeRoom() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.list) < agentproto.MaxSessions {
		return nil
	}
	for i, s := range t.list {
		if s.isFinished() {
			t.list = append(t.list[:i:i], t.list[i+1:]...)
			return nil
		}
	}
	return agentproto.Errorf(agentproto.CodeExecFailed, "%d sessions are running already: wait for one to end", agentproto.MaxSessions)
}

func (t *sessionTable) add(sess *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.list = append(t.list, sess)
}

func (t *sessionTable) get(id string) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range t.list {
		if s.id == id {
			return s
		}
	}
	return nil
}

func (t *sessionTable) snapshot() []agentproto.SessionInfo {
	t.mu.Lock()
	list := append([]*session(nil), t.list...)
	t.mu.Unlock()
	out := make([]agentproto.SessionInfo, 0, len(list))
	for _, s := range list {
		out = append(out, s.info())
	}
	return out
}

func (s *session) isFinished() bool {
	select {
	case <-s.finished:
		return true
	default:
		return false
	}
}

func (s *session) info() agentproto.SessionInfo {
	written, _ := s.out.Stats()
	si := agentproto.SessionInfo{ID: s.id, Argv: s.argv, TTY: s.tty, Stdin: s.stdin, PID: s.proc.cmd.Process.Pid,
		StartedAt: s.started, State: agentproto.SessionRunning, OutputBytes: written}
	s.mu.Lock()
	defer s.mu.Unlock()
	si.Clients = s.clients
	if !s.ended.IsZero() {
		ended, code := s.ended, s.code
		si.EndedAt, si.ExitCode, si.State = &ended, &code, agentproto.SessionExited
	}
	return si
}

func (s *Server) handleSessionStart(_ context.Context, st *agentproto.Stream, log *slog.Logger, raw json.RawMessage) error {
	var req agentproto.SessionStart
	if err := decodeParams(raw, &req); err != nil {
		return fail(st, err)
	}
	if err := validateExec(&req.ExecRequest); err != nil {
		return fail(st, err)
	}
	if req.ReplayBytes < 0 || req.ReplayBytes > agentproto.MaxReplayBytes {
		return fail(st, agentproto.Errorf(agentproto.CodeBadRequest, "replay_bytes %d is outside 0..%d", req.ReplayBytes, agentproto.MaxReplayBytes))
	}
	if req.ReplayBytes == 0 {
		req.ReplayBytes = agentproto.DefaultReplayBytes
	}
	id := req.ID
	if id == "" {
		var err error
		if id, err = agentproto.NewSessionID(req.TTY); err != nil {
			return fail(st, err)
		}
	}
	if !agentproto.ValidSessionID(id) || agentproto.SessionIDTTY(id) != req.TTY {
		return fail(st, agentproto.Errorf(agentproto.CodeBadRequest, "session id %.40q is not 16 hex digits whose last is odd exactly for a tty session", id))
	}
	env := mergeEnv(os.Environ(), req.Env)
	if req.TTY && envValue(env, "TERM") == "" {
		env = append(env, "TERM=xterm-256color")
	}
	path, err := lookPath(req.Argv[0], envValue(env, "PATH"))
	if err != nil {
		return fail(st, err)
	}
	sess := &session{
		id: id, argv: req.Argv, tty: req.TTY, stdin: req.Stdin || req.TTY, started: time.Now(),
		out:       sessionstream.New(req.ReplayBytes, agentproto.MaxSessionClients),
		stdinCh:   make(chan []byte, stdinQueue),
		stdinDone: make(chan struct{}),
		finished:  make(chan struct{}),
	}
	// Only starters add to the table and finishing only frees room, so a
	// check under startMu holds until the add: a full table refuses before
	// any process exists.
	s.sessions.startMu.Lock()
	defer s.sessions.startMu.Unlock()
	if s.sessions.get(id) != nil {
		return fail(st, agentproto.Errorf(agentproto.CodeBadRequest, "session id %s is in use", id))
	}
	if err := s.sessions.makeRoom(); err != nil {
		return fail(st, err)
	}
	// Not tied to the request: the process outlives this stream.
	cmd := &exec.Cmd{Path: path, Args: req.Argv, Env: env, Dir: req.Dir}
	p, err := startProc(cmd, req.ExecRequest)
	if err != nil {
		return fail(st, agentproto.Errorf(agentproto.CodeExecFailed, "start %q: %v", req.Argv[0], err))
	}
	sess.proc = p
	sess.log = log.With("session", id, "pid", cmd.Process.Pid)
	p.log = sess.log
	s.sessions.add(sess)
	sess.log.Info("session started", "argv0", req.Argv[0], "tty", req.TTY)
	go sess.run()
	return Respond(st, agentproto.SessionStarted{ID: id, PID: cmd.Process.Pid})
}

// run keeps the process's output in the ring until it has exited and its
// output is drained, then records the exit code.
func (s *session) run() {
	p := s.proc
	go p.reap()
	go s.writeStdin()
	if !s.stdin {
		s.closeStdin()
	}
	var wg sync.WaitGroup
	pump := func(f *os.File, k sessionstream.Kind) {
		defer wg.Done()
		s.pump(f, k)
	}
	if p.tty != nil {
		wg.Add(1)
		go pump(p.tty, sessionstream.Stdout)
	} else {
		wg.Add(2)
		go pump(p.stdout, sessionstream.Stdout)
		go pump(p.stderr, sessionstream.Stderr)
	}
	<-p.done
	for _, f := range []*os.File{p.tty, p.stdout, p.stderr} {
		if f != nil {
			_ = f.SetReadDeadline(time.Now().Add(drainIdle))
		}
	}
	err := p.cmd.Wait()
	wg.Wait()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		s.log.Warn("wait for session process", "err", err)
	}
	code := exitCode(p.cmd.ProcessState)
	s.mu.Lock()
	s.ended, s.code = time.Now(), code
	s.mu.Unlock()
	s.out.Close()
	close(s.finished)
	if p.tty != nil {
		_ = p.tty.Close()
	} else {
		closeAll(p.stdout, p.stderr)
	}
	s.log.Info("session ended", "code", code)
}

// pump copies one output stream into the ring; after the exit it drains
// what background children still write, as exec's pump does.
func (s *session) pump(f *os.File, k sessionstream.Kind) {
	buf := make([]byte, agentproto.ChunkSize)
	var hardStop time.Time
	for {
		select {
		case <-s.proc.done:
			if hardStop.IsZero() {
				hardStop = time.Now().Add(drainMax)
			}
			_ = f.SetReadDeadline(minTime(time.Now().Add(drainIdle), hardStop))
		default:
		}
		n, err := f.Read(buf)
		if n > 0 {
			s.out.Write(k, buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// writeStdin feeds the process from attached clients until stdin is
// closed or the session ends. A write the process does not read blocks
// here, never a client's frame reader (stdinCh is bounded, and pushes give
// up when the client goes).
func (s *session) writeStdin() {
	w := s.proc.stdin
	if s.proc.tty != nil {
		w = s.proc.tty
	}
	for {
		select {
		case <-s.finished:
			return
		case b := <-s.stdinCh:
			if b == nil {
				if s.proc.tty == nil {
					_ = s.proc.stdin.Close()
				}
				return
			}
			if _, err := w.Write(b); err != nil {
				s.log.Debug("write session stdin", "err", err)
			}
		}
	}
}

// closeStdin ends the process's stdin for good (pipes only: a tty stays).
func (s *session) closeStdin() {
	if s.tty {
		return
	}
	s.stdinOnce.Do(func() {
		close(s.stdinDone)
		select {
		case s.stdinCh <- nil:
		case <-s.finished:
		}
	})
}

func (s *session) push(ctx context.Context, b []byte) {
	select {
	case s.stdinCh <- b:
	case <-s.stdinDone:
	case <-s.finished:
	case <-ctx.Done():
	}
}

func (s *Server) handleSessionList(_ context.Context, st *agentproto.Stream, _ *slog.Logger, _ json.RawMessage) error {
	return Respond(st, s.sessions.snapshot())
}

// handleSessionAttach replays the session's ring, then streams live output
// until the process has ended (exit frame) or the host goes away, which
// only detaches: the process keeps running.
func (s *Server) handleSessionAttach(ctx context.Context, st *agentproto.Stream, log *slog.Logger, raw json.RawMessage) error {
	var p agentproto.SessionAttachParams
	if err := decodeParams(raw, &p); err != nil {
		return fail(st, err)
	}
	if !agentproto.ValidSessionID(p.ID) {
		return fail(st, agentproto.Errorf(agentproto.CodeBadRequest, "session id %.40q is not 16 hex digits", p.ID))
	}
	sess := s.sessions.get(p.ID)
	if sess == nil {
		return fail(st, agentproto.Errorf(agentproto.CodeNotFound, "no session %s (banger vm sessions lists them)", p.ID))
	}
	sub, err := sess.out.Subscribe()
	if err != nil {
		return fail(st, agentproto.Errorf(agentproto.CodeExecFailed, "session %s has %d clients attached already", p.ID, agentproto.MaxSessionClients))
	}
	defer sub.Close()
	sess.mu.Lock()
	sess.clients++
	sess.mu.Unlock()
	var detachOnce sync.Once
	detach := func() {
		detachOnce.Do(func() {
			sess.mu.Lock()
			sess.clients--
			sess.mu.Unlock()
		})
	}
	defer detach()
	if err := Respond(st, agentproto.SessionAttached{ID: sess.id, TTY: sess.tty}); err != nil {
		return nil
	}
	log = log.With("session", sess.id)
	log.Debug("client attached")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer cancel() // the host's side ended: detach
		sess.readAttachInput(ctx, st)
	}()
	for {
		c, lost, err := sub.Next(ctx)
		if lost > 0 {
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], uint64(lost))
			if st.WriteFrame(agentproto.FrameLost, b[:]) != nil {
				return nil
			}
		}
		if errors.Is(err, io.EOF) {
			sess.mu.Lock()
			code := sess.code
			sess.mu.Unlock()
			// Detached before the exit is sent: a client that lists the
			// sessions once its attach returned must not count itself.
			detach()
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], uint32(int32(code)))
			_ = st.WriteFrame(agentproto.FrameExit, b[:])
			return nil
		}
		if err != nil {
			log.Debug("client detached")
			return nil
		}
		t := agentproto.FrameStdout
		if c.Kind == sessionstream.Stderr {
			t = agentproto.FrameStderr
		}
		if _, err := (agentproto.FrameWriter{S: st, T: t}).Write(c.Data); err != nil {
			log.Debug("client gone: detached", "err", err)
			return nil
		}
	}
}

// readAttachInput applies one client's frames until its stream ends.
// Nothing here ends the process: a client going away only detaches.
func (s *session) readAttachInput(ctx context.Context, st *agentproto.Stream) {
	for {
		t, payload, err := st.ReadFrame()
		if err != nil {
			return
		}
		switch t {
		case agentproto.FrameStdin:
			if s.stdin {
				s.push(ctx, payload)
			}
		case agentproto.FrameEOF:
			s.closeStdin()
		case agentproto.FrameResize:
			if len(payload) == 4 && s.proc.tty != nil {
				ws := &unix.Winsize{Row: binary.BigEndian.Uint16(payload), Col: binary.BigEndian.Uint16(payload[2:])}
				_ = withFd(s.proc.tty, func(fd int) { _ = unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, ws) })
			}
		case agentproto.FrameSignal:
			if sig, ok := agentproto.SignalsByName[string(payload)]; ok {
				s.proc.signal(sig, false)
			}
		}
	}
}
