package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentclient"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/roothelper"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/vmlife"
	"github.com/bangerdev/banger/internal/vmm"
)

// guestAgent is the daemon's client of one VM's agent.
type guestAgent struct {
	*agentclient.Client
	close func() error
}

func (g *guestAgent) Health(ctx context.Context) (string, error) {
	h, err := g.Client.Health(ctx)
	return h.BootID, err
}

func (g *guestAgent) Close() error { return g.close() }

// dialAgent builds the agent client for a VM's agent endpoint, one kind at
// a time: a kind it does not know (a record from another banger, or the
// removed vhost-vsock) is refused by name, never guessed at.
func (d *Daemon) dialAgent(ep vmm.AgentEndpoint) (vmlife.Agent, error) {
	return dialAgentEndpoint(ep, d.log.With("agent", ep.SocketPath), d.helper)
}

// helper reaches a jailed Firecracker's vsock socket (ep.JailID set).
func dialAgentEndpoint(ep vmm.AgentEndpoint, lg *slog.Logger, helper *roothelper.Client) (*guestAgent, error) {
	switch ep.Kind {
	case vmm.AgentHybridVsock, vmm.AgentVirtioSerialYamux:
		if ep.SocketPath == "" {
			return nil, fmt.Errorf("dial guest agent over %s: the endpoint has no socket path", ep.Kind)
		}
	}
	switch ep.Kind {
	case vmm.AgentHybridVsock:
		if ep.Port == 0 {
			return nil, fmt.Errorf("dial guest agent over %s: the endpoint has no vsock port", ep.Kind)
		}
		dial := agentclient.HybridVsockDialer(ep.SocketPath, ep.Port)
		if ep.JailID != "" {
			if helper == nil {
				return nil, fmt.Errorf("dial guest agent of jail %s: no root helper to reach it through", ep.JailID)
			}
			// A jailed Firecracker's socket: each connection is one the
			// root helper opens and passes.
			dial = agentclient.HybridVsockOver(func(ctx context.Context) (net.Conn, error) {
				f, _, err := helper.ConnectJailer(ctx, ep.JailID, api.JailerSocketVsock)
				if err != nil {
					return nil, fmt.Errorf("root helper: %w", err)
				}
				defer f.Close()
				return net.FileConn(f)
			}, ep.Port)
		}
		return &guestAgent{Client: agentclient.NewClient(dial, lg), close: func() error { return nil }}, nil
	case vmm.AgentVirtioSerialYamux:
		yd := agentclient.NewYamuxDialer(ep.SocketPath, lg)
		return &guestAgent{Client: agentclient.NewClient(yd.Dial, lg), close: yd.Close}, nil
	default:
		return nil, fmt.Errorf("dial guest agent: unknown agent transport %q (this daemon speaks %s and %s): restart the vm with this banger",
			ep.Kind, vmm.AgentVirtioSerialYamux, vmm.AgentHybridVsock)
	}
}

// vmExec runs a command in a VM through its agent, relaying stdin, signals
// and window sizes from the client and stdout/stderr back to it.
func (d *Daemon) vmExec(ctx context.Context, c *rpc.Call, p api.VMExec) (api.VMExecResult, error) {
	if len(p.Argv) == 0 {
		return api.VMExecResult{}, api.Errorf(api.CodeInvalidArgument, "vm exec: no command given")
	}
	c.SetTarget(p.Name)
	if err := checkOrigin(p.Origin); err != nil {
		return api.VMExecResult{}, err
	}
	timeout, err := execTimeout(d.cfg.MCP, p.Origin, p.TimeoutSeconds)
	if err != nil {
		return api.VMExecResult{}, err
	}
	vm, ga, err := d.agentOf(ctx, p.Name, "exec")
	if err != nil {
		return api.VMExecResult{}, err
	}
	if p.Dir == "" {
		p.Dir = vm.Workdir // --workspace: commands start in the mounted project
	}
	if p.Detach {
		return d.startDetached(ctx, c, vm, ga, p) // sessions.go
	}
	callCtx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	in := relayClientInput(ctx, c, nil)
	stdinR := in.stdin
	var stdin io.Reader
	if p.Stdin || p.TTY {
		stdin = stdinR
	}
	out := &frameWriter{c: c, kind: api.KindStdout}
	errw := &frameWriter{c: c, kind: api.KindStderr}
	c.Log.InfoContext(ctx, "exec in guest", "vm", vm.Name, "argv0", p.Argv[0], "tty", p.TTY)
	endSession := d.startSession(ctx, c, vm, p.Argv)
	code, err := ga.Exec(ctx, agentproto.ExecRequest{Argv: p.Argv, Env: p.Env, Dir: p.Dir, TTY: p.TTY, Rows: p.Rows, Cols: p.Cols},
		stdin, out, errw, in.resize, in.signals)
	endSession(code, err)
	stdinR.Close()
	if err != nil {
		if callCtx.Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return api.VMExecResult{}, api.Errorf(api.CodeCanceled, "exec in vm %q: %s timed out after %s (the command was ended)", vm.Name, p.Argv[0], timeout)
		}
		return api.VMExecResult{}, agentError(fmt.Errorf("exec in vm %q: %w", vm.Name, err))
	}
	return api.VMExecResult{ExitCode: code}, nil
}

// frameWriter sends what is written as data frames of one kind.
type frameWriter struct {
	c    *rpc.Call
	kind string
}

func (w *frameWriter) Write(b []byte) (int, error) {
	if err := w.c.Send(w.kind, b); err != nil {
		return 0, err
	}
	return len(b), nil
}
