// Package mcpserver serves banger over the Model Context Protocol: each tool
// is a typed call into the owner daemon, made the way the CLI makes it, with
// the request marked as coming from MCP so the daemon applies config.toml's
// [mcp] limits. Everything a tool returns from a guest is bounded: an agent's
// client must not be flooded by a guest (which is hostile).
package mcpserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/vmforward"
)

// Bounds of what crosses to the MCP client.
const (
	DefaultMaxFileBytes = 1 << 20          // vm_read_file / vm_write_file
	maxOutputBytes      = 1 << 20          // per stream of vm_exec / vm_run
	maxConsoleBytes     = 64 << 10         // the console resource: its last 64 KiB
	maxStdinBytes       = 1 << 20          // vm_exec stdin
	maxForwards         = 16               // live vm_forward listeners per server
	probeTimeout        = 10 * time.Second // vm_forward: how long the first connection may take
)

// Config is what a Server needs.
type Config struct {
	Client       *rpc.Client // the owner daemon
	Log          *slog.Logger
	Version      string
	MaxFileBytes int64 // 0: DefaultMaxFileBytes
}

// Server is one MCP session's worth of banger: the MCP server and the port
// forwards its tools started, which end with it.
type Server struct {
	c       *rpc.Client
	log     *slog.Logger
	maxFile int64
	mcp     *mcp.Server

	mu       sync.Mutex
	forwards []*forward
	done     bool
	wg       sync.WaitGroup
}

// New builds the server and registers its tools and resources.
func New(cfg Config) *Server {
	s := &Server{c: cfg.Client, log: cfg.Log, maxFile: cfg.MaxFileBytes}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.maxFile <= 0 {
		s.maxFile = DefaultMaxFileBytes
	}
	s.mcp = mcp.NewServer(&mcp.Implementation{Name: "banger", Version: cfg.Version}, &mcp.ServerOptions{
		Instructions: "banger runs disposable Linux microVMs. vm_run runs a command in a fresh VM and removes it; " +
			"vm_create + vm_exec + vm_remove keep one around. The operator's [mcp] limits (VM count, memory, " +
			"network, exec timeout) are enforced by the banger daemon.",
	})
	s.register()
	return s
}

// MCP returns the underlying MCP server (tests connect in-memory transports).
func (s *Server) MCP() *mcp.Server { return s.mcp }

// Run serves t until the client leaves or ctx ends, then stops every
// forward the session started.
func (s *Server) Run(ctx context.Context, t mcp.Transport) error {
	ctx, cancel := context.WithCancel(ctx)
	defer s.stopForwards()
	defer cancel()
	return s.mcp.Run(ctx, t)
}

func (s *Server) stopForwards() {
	s.mu.Lock()
	s.done = true
	fw := s.forwards
	s.forwards = nil
	s.mu.Unlock()
	for _, f := range fw {
		f.stop()
	}
	s.wg.Wait()
}

// progressFunc turns the daemon's progress events into MCP progress
// notifications when the client asked for them (sent a progressToken).
func progressFunc(ctx context.Context, req *mcp.CallToolRequest) func(progress.Event) {
	if req == nil || req.Params == nil || req.Session == nil {
		return nil
	}
	tok := req.Params.GetProgressToken()
	if tok == nil {
		return nil
	}
	var mu sync.Mutex
	n := 0.0
	return func(ev progress.Event) {
		mu.Lock()
		defer mu.Unlock()
		n++ // MCP progress must increase on every notification
		msg := ev.Stage
		if ev.Message != "" {
			msg += ": " + ev.Message
		} else if ev.Item != "" {
			msg += ": " + ev.Item
		}
		_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: n, Message: msg})
	}
}

// boundedBuffer keeps the first max bytes written and counts the rest.
type boundedBuffer struct {
	b       []byte
	max     int
	dropped int64
}

func (w *boundedBuffer) Write(p []byte) (int, error) {
	room := w.max - len(w.b)
	if room > len(p) {
		room = len(p)
	}
	if room > 0 {
		w.b = append(w.b, p[:room]...)
	}
	w.dropped += int64(len(p) - max(room, 0))
	return len(p), nil
}

// execOpts is one exec through the daemon.
type execOpts struct {
	argv    []string
	env     []string
	dir     string
	stdin   []byte
	timeout int
}

// execResult is what a command did.
type execResult struct {
	ExitCode        int    `json:"exit_code" jsonschema:"the command's exit code"`
	Stdout          string `json:"stdout" jsonschema:"standard output (first 1 MiB)"`
	Stderr          string `json:"stderr" jsonschema:"standard error (first 1 MiB)"`
	StdoutTruncated bool   `json:"stdout_truncated,omitempty" jsonschema:"stdout was longer than 1 MiB"`
	StderrTruncated bool   `json:"stderr_truncated,omitempty" jsonschema:"stderr was longer than 1 MiB"`
}

// exec runs a command through the daemon's vm.exec stream.
func (s *Server) exec(ctx context.Context, name string, o execOpts) (execResult, error) {
	var res execResult
	p := api.VMExec{Name: name, Argv: o.argv, Env: o.env, Dir: o.dir, Stdin: o.stdin != nil,
		TimeoutSeconds: o.timeout, Origin: model.OriginMCP}
	st, err := rpc.OpenStream(ctx, s.c, api.MethodVMExec, p)
	if err != nil {
		return res, err
	}
	defer st.Close()
	if o.stdin != nil {
		go func() {
			for b := o.stdin; len(b) > 0; {
				n := min(len(b), 32<<10)
				if st.Send(api.KindStdin, b[:n]) != nil {
					return
				}
				b = b[n:]
			}
			_ = st.Send(api.KindStdinEOF, nil)
		}()
	}
	out := &boundedBuffer{max: maxOutputBytes}
	errw := &boundedBuffer{max: maxOutputBytes}
	for {
		f, err := st.Next()
		if err != nil {
			return res, err
		}
		switch f.Type {
		case rpc.FrameData:
			var b []byte
			if err := json.Unmarshal(f.Payload, &b); err != nil {
				return res, fmt.Errorf("decode %s of exec in vm %q: %w", f.Kind, name, err)
			}
			if f.Kind == api.KindStderr {
				_, _ = errw.Write(b)
			} else {
				_, _ = out.Write(b)
			}
		case rpc.FrameResult:
			r, err := st.Result(f)
			if err != nil {
				return res, fmt.Errorf("exec result of vm %q: %w", name, err)
			}
			res.ExitCode = r.ExitCode
			res.Stdout, res.Stderr = string(out.b), string(errw.b)
			res.StdoutTruncated, res.StderrTruncated = out.dropped > 0, errw.dropped > 0
			return res, nil
		}
	}
}

// forward is one live vm_forward listener.
type forward struct {
	vm, addr  string
	guestPort int
	ln        net.Listener
	cancel    context.CancelFunc
}

func (f *forward) stop() {
	f.cancel()
	f.ln.Close()
}

// startForward listens on 127.0.0.1:hostPort and carries each connection
// to guestPort in the VM over vm.forward, until the server ends.
func (s *Server) startForward(name string, guestPort, hostPort int) (*forward, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return nil, errors.New("the mcp server is stopping")
	}
	if len(s.forwards) >= maxForwards {
		return nil, fmt.Errorf("%d forwards are already live in this session (the most one session keeps)", maxForwards)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(hostPort)))
	if err != nil {
		return nil, fmt.Errorf("listen on 127.0.0.1:%d for forwarding: %w", hostPort, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &forward{vm: name, addr: ln.Addr().String(), guestPort: guestPort, ln: ln, cancel: cancel}
	s.forwards = append(s.forwards, f)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var conns sync.WaitGroup
		defer conns.Wait()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				if err := vmforward.Conn(ctx, s.c, conn, api.VMForward{Name: name, Port: guestPort, Origin: model.OriginMCP}); err != nil && ctx.Err() == nil {
					s.log.Warn("forward connection", "vm", name, "port", guestPort, "err", err)
				}
			}()
		}
	}()
	return f, nil
}

// probeForward makes one vm.forward connection and ends it at once, so a
// forward the daemon refuses ([mcp] allow_network) or a port nothing
// listens on fails the tool call, not only later connections.
func (s *Server) probeForward(ctx context.Context, name string, port int) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	st, err := rpc.OpenStream(ctx, s.c, api.MethodVMForward, api.VMForward{Name: name, Port: port, Origin: model.OriginMCP})
	if err != nil {
		return err
	}
	defer st.Close()
	_ = st.CloseSend()
	for {
		f, err := st.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil // connected, and the guest side keeps it open
			}
			return err
		}
		if f.Type == rpc.FrameResult {
			return nil
		}
	}
}
