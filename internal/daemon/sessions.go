package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentclient"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
)

// Detached exec sessions live in the guest agent, not here: the daemon
// starts them, relays attaches and lists them, so a daemon restart loses
// nothing. A plain vm exec keeps its old contract: its process ends when
// its client goes away.

// sessionListTimeout bounds asking a guest for its sessions in vm.sessions.
const sessionListTimeout = 10 * time.Second

func (d *Daemon) sessionMethods(m *rpc.Methods) {
	rpc.Register(m, api.MethodVMAttach, d.vmAttach)
}

// startDetached is vm.exec with Detach: the agent starts the process and
// keeps it; the call ends with its session id.
func (d *Daemon) startDetached(ctx context.Context, c *rpc.Call, vm model.VM, ga *guestAgent, p api.VMExec) (api.VMExecResult, error) {
	if p.Origin != "" {
		// A detached process would escape the origin's exec timeout.
		return api.VMExecResult{}, api.Errorf(api.CodePermissionDenied, "vm exec: --detach is not available to origin %q", p.Origin)
	}
	if p.TimeoutSeconds != 0 {
		return api.VMExecResult{}, api.Errorf(api.CodeInvalidArgument, "vm exec: a timeout and --detach do not go together (the session outlives the call)")
	}
	req := agentproto.SessionStart{
		ExecRequest: agentproto.ExecRequest{Argv: p.Argv, Env: p.Env, Dir: p.Dir, TTY: p.TTY, Rows: p.Rows, Cols: p.Cols},
		Stdin:       p.Stdin,
		ReplayBytes: int(d.cfg.Sessions.ReplayBytes),
	}
	started, err := ga.StartSession(ctx, req)
	if err != nil {
		return api.VMExecResult{}, agentError(fmt.Errorf("start detached session in vm %q: %w", vm.Name, err))
	}
	c.Log.InfoContext(ctx, "detached session started", "vm", vm.Name, "session", started.ID, "argv0", p.Argv[0], "tty", p.TTY)
	return api.VMExecResult{Session: &api.SessionStarted{ID: started.ID, PID: started.PID}}, nil
}

// vmAttach relays one client to a detached session until the process
// exits or the client goes (which only detaches it).
func (d *Daemon) vmAttach(ctx context.Context, c *rpc.Call, p api.VMAttach) (api.ExecResult, error) {
	if !agentproto.ValidSessionID(p.Session) {
		return api.ExecResult{}, api.Errorf(api.CodeInvalidArgument, "vm attach: session %q is not a session id (16 hex digits, as banger vm sessions %s shows)", p.Session, p.Name)
	}
	c.SetTarget(p.Name)
	vm, ga, err := d.agentOf(ctx, p.Name, "sessions")
	if err != nil {
		return api.ExecResult{}, err
	}
	// Not io.EOF: a client that went away detaches, it does not end the
	// session's stdin.
	in := relayClientInput(ctx, c, errClientGone)
	var stdin io.Reader
	if p.Stdin {
		stdin = in.stdin
	} else {
		_ = in.stdin.Close() // stray stdin frames are dropped, never queued
	}
	defer in.stdin.Close()
	c.Log.InfoContext(ctx, "attach to session", "vm", vm.Name, "session", p.Session)
	code, err := ga.Attach(ctx, p.Session, agentclient.AttachIO{
		Stdin: stdin, Stdout: &frameWriter{c: c, kind: api.KindStdout}, Stderr: &frameWriter{c: c, kind: api.KindStderr},
		Resize: in.resize, Signals: in.signals,
		Attached: func(a agentproto.SessionAttached) {
			// The mode is the one the daemon chose (the id carries it),
			// which the agent client has checked the guest's word against.
			_ = c.Send(api.KindAttached, api.DetachedSession{ID: a.ID, TTY: agentproto.SessionIDTTY(a.ID), State: agentproto.SessionRunning})
			if a.TTY && p.Rows > 0 && p.Cols > 0 {
				select {
				case in.resizeIn <- agentproto.WinSize{Rows: p.Rows, Cols: p.Cols}:
				default:
				}
			}
		},
		Lost: func(n uint64) { _ = c.Send(api.KindLost, n) },
	})
	if err != nil {
		if ctx.Err() != nil {
			c.Log.InfoContext(ctx, "client detached from session", "vm", vm.Name, "session", p.Session)
			return api.ExecResult{}, ctx.Err()
		}
		return api.ExecResult{}, agentError(fmt.Errorf("attach to session %s in vm %q: %w", p.Session, vm.Name, err))
	}
	return api.ExecResult{ExitCode: code}, nil
}

var errClientGone = errors.New("client gone")

// clientInput is what a client sends on an exec-like call, decoded.
type clientInput struct {
	stdin    *io.PipeReader
	resize   <-chan agentproto.WinSize
	resizeIn chan<- agentproto.WinSize
	signals  <-chan os.Signal
}

// relayClientInput decodes the client's stdin, signal and resize frames
// until the call ends. Malformed frames are dropped; signals and sizes
// the agent is slow to take are dropped rather than queued without bound.
// When the client goes away, stdin ends with gone (nil: a plain EOF).
func relayClientInput(ctx context.Context, c *rpc.Call, gone error) clientInput {
	stdinR, stdinW := io.Pipe()
	resize := make(chan agentproto.WinSize, 4)
	signals := make(chan os.Signal, 4)
	go func() {
		for {
			f, err := c.Recv(ctx)
			if err != nil {
				stdinW.CloseWithError(gone)
				return
			}
			switch f.Kind {
			case api.KindStdinEOF:
				stdinW.Close()
			case api.KindStdin:
				var b []byte
				if json.Unmarshal(f.Payload, &b) == nil {
					if _, err := stdinW.Write(b); err != nil && !errors.Is(err, io.ErrClosedPipe) {
						return
					}
				}
			case api.KindSignal:
				var n int
				if json.Unmarshal(f.Payload, &n) == nil && n > 0 && n < 65 {
					select {
					case signals <- syscall.Signal(n):
					default:
					}
				}
			case api.KindResize:
				var ws api.WinSize
				if json.Unmarshal(f.Payload, &ws) == nil {
					select {
					case resize <- agentproto.WinSize{Rows: ws.Rows, Cols: ws.Cols}:
					default:
					}
				}
			}
		}
	}()
	return clientInput{stdin: stdinR, resize: resize, resizeIn: resize, signals: signals}
}

// detachedSessions asks a running VM's agent for its sessions; the error
// string says why there are none to show (VM stopped, old agent).
func (d *Daemon) detachedSessions(ctx context.Context, name string) ([]api.DetachedSession, string) {
	out := []api.DetachedSession{}
	vm, ga, err := d.agentOf(ctx, name, "sessions")
	if err != nil {
		return out, err.Error()
	}
	lctx, cancel := context.WithTimeout(ctx, sessionListTimeout)
	defer cancel()
	list, err := ga.Sessions(lctx)
	if err != nil {
		return out, agentError(fmt.Errorf("list detached sessions of vm %q: %w", vm.Name, err)).Error()
	}
	for _, s := range list {
		out = append(out, api.DetachedSession{ID: s.ID, Command: s.Argv, TTY: s.TTY, Stdin: s.Stdin, PID: s.PID,
			StartedAt: s.StartedAt, EndedAt: s.EndedAt, State: s.State, ExitCode: s.ExitCode,
			OutputBytes: s.OutputBytes, Clients: s.Clients})
	}
	return out, ""
}
