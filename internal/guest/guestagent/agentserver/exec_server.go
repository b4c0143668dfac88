package agentserver

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

const (
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// After the process exits, output still held open by its background
	// children is forwarded while it keeps coming, for at most drainMax.
	drainIdle = 250 * time.Millisecond
	drainMax  = 3 * time.Second
	// stdinQueue bounds stdin chunks buffered while the process is not
	// reading, so frames behind them (signals, resize) are still handled.
	stdinQueue = 64
)

// execProc is one running exec request.
type execProc struct {
	cmd    *exec.Cmd
	tty    *os.File // pty master, or nil
	stdin  *os.File // pipe write end (no tty)
	stdout *os.File // pipe read ends (no tty)
	stderr *os.File
	log    *slog.Logger

	mu     sync.Mutex
	exited bool          // set once the process is a zombie: no signal after that
	done   chan struct{} // closed with exited
}

func (s *Server) handleExec(ctx context.Context, st *agentproto.Stream, log *slog.Logger, raw json.RawMessage) error {
	var req agentproto.ExecRequest
	if err := decodeParams(raw, &req); err != nil {
		return fail(st, err)
	}
	if err := validateExec(&req); err != nil {
		return fail(st, err)
	}
	env := mergeEnv(os.Environ(), req.Env)
	if req.TTY && envValue(env, "TERM") == "" {
		env = append(env, "TERM=xterm-256color")
	}
	path, err := lookPath(req.Argv[0], envValue(env, "PATH"))
	if err != nil {
		return fail(st, err)
	}
	cmd := &exec.Cmd{Path: path, Args: req.Argv, Env: env, Dir: req.Dir}
	p, err := startProc(cmd, req)
	if err != nil {
		return fail(st, agentproto.Errorf(agentproto.CodeExecFailed, "start %q: %v", req.Argv[0], err))
	}
	p.log = log.With("pid", cmd.Process.Pid)
	p.log.Debug("process started", "argv", req.Argv, "tty", req.TTY)
	if err := Respond(st, agentproto.ExecStarted{PID: cmd.Process.Pid}); err != nil {
		p.kill(s.opts.KillGrace)
	}
	return p.run(ctx, st, s.opts.KillGrace)
}

func validateExec(req *agentproto.ExecRequest) error {
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return agentproto.Errorf(agentproto.CodeBadRequest, "exec needs a non-empty argv")
	}
	for _, a := range append(append([]string{req.Dir}, req.Argv...), req.Env...) {
		if strings.ContainsRune(a, 0) {
			return agentproto.Errorf(agentproto.CodeBadRequest, "exec argument contains a NUL byte")
		}
	}
	for _, kv := range req.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return agentproto.Errorf(agentproto.CodeBadRequest, "env entry %q is not K=V", kv)
		}
	}
	if req.Rows == 0 || req.Cols == 0 {
		req.Rows, req.Cols = 24, 80
	}
	return nil
}

// mergeEnv returns base with overrides applied; later keys win.
func mergeEnv(base, overrides []string) []string {
	idx := map[string]int{}
	var out []string
	for _, kv := range append(append([]string{}, base...), overrides...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// lookPath resolves name in the request's PATH (not the agent's).
func lookPath(name, pathEnv string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	if pathEnv == "" {
		pathEnv = defaultPath
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", agentproto.Errorf(agentproto.CodeNotFound, "executable %q not found in PATH", name)
}

func startProc(cmd *exec.Cmd, req agentproto.ExecRequest) (*execProc, error) {
	p := &execProc{cmd: cmd, done: make(chan struct{})}
	if req.TTY {
		// pty.Start makes the child a session leader with the pty as its
		// controlling terminal, so its pid is also its process group.
		tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: req.Rows, Cols: req.Cols})
		if err != nil {
			return nil, err
		}
		p.tty, err = pollable(tty)
		if err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return nil, err
		}
		return p, nil
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdin pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW)
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW, outR, outW)
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	closeAll(inR, outW, errW) // the child holds its own copies
	if err != nil {
		closeAll(inW, outR, errR)
		return nil, err
	}
	p.stdin, p.stdout, p.stderr = inW, outR, errR
	return p, nil
}

// pollable re-opens f's descriptor non-blocking, so reads honour deadlines
// and Close unblocks them (pty.Start leaves the master in blocking mode).
func pollable(f *os.File) (*os.File, error) {
	defer f.Close()
	var nfd int
	var err error
	if cerr := withFd(f, func(fd int) { nfd, err = unix.Dup(fd) }); cerr != nil {
		return nil, cerr
	}
	if err != nil {
		return nil, fmt.Errorf("dup pty master: %w", err)
	}
	unix.CloseOnExec(nfd)
	if err := unix.SetNonblock(nfd, true); err != nil {
		_ = unix.Close(nfd)
		return nil, fmt.Errorf("set pty master non-blocking: %w", err)
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}

// withFd runs fn on f's descriptor without f.Fd(), which would switch f
// back to blocking mode.
func withFd(f *os.File, fn func(fd int)) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { fn(int(fd)) })
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		_ = f.Close()
	}
}

// run shuttles frames until the process has exited and its output is
// forwarded, then sends the exit frame.
func (p *execProc) run(ctx context.Context, st *agentproto.Stream, grace time.Duration) error {
	go p.reap()

	stdinCh := make(chan []byte, stdinQueue)
	var inputWG sync.WaitGroup
	inputWG.Add(2)
	go func() { defer inputWG.Done(); p.readInput(st, stdinCh, grace) }()
	go func() { defer inputWG.Done(); p.writeStdin(stdinCh) }()

	var outWG sync.WaitGroup
	pump := func(f *os.File, t byte) {
		defer outWG.Done()
		p.pump(st, f, t, grace)
	}
	if p.tty != nil {
		outWG.Add(1)
		go pump(p.tty, agentproto.FrameStdout)
	} else {
		outWG.Add(2)
		go pump(p.stdout, agentproto.FrameStdout)
		go pump(p.stderr, agentproto.FrameStderr)
	}

	<-p.done
	// Wake pumps blocked in Read so they switch to draining with a deadline.
	for _, f := range []*os.File{p.tty, p.stdout, p.stderr} {
		if f != nil {
			_ = f.SetReadDeadline(time.Now().Add(drainIdle))
		}
	}
	err := p.cmd.Wait()
	outWG.Wait()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		p.log.Warn("wait for process", "err", err)
	}
	code := exitCode(p.cmd.ProcessState)
	p.log.Debug("process exited", "code", code)
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(int32(code)))
	werr := st.WriteFrame(agentproto.FrameExit, b[:])

	// Unblock the input side: closing the stream ends readInput, closing
	// stdin ends a writer stuck on a pipe nobody reads.
	_ = st.Close()
	if p.tty != nil {
		_ = p.tty.Close()
	} else {
		closeAll(p.stdin, p.stdout, p.stderr)
	}
	inputWG.Wait()
	if werr != nil && ctx.Err() == nil {
		return fmt.Errorf("send exit code: %w", werr)
	}
	return nil
}

// reap waits for the process to exit without reaping it, so the pid (and
// process group) cannot be reused while signals may still be sent.
func (p *execProc) reap() {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, p.cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	p.mu.Lock()
	p.exited = true
	close(p.done)
	p.mu.Unlock()
}

func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// signal sends sig to the process group that owns the terminal (tty) or
// to the process's own group.
func (p *execProc) signal(sig syscall.Signal, alsoLeader bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return
	}
	pgid := p.cmd.Process.Pid
	if p.tty != nil {
		if fg := foregroundGroup(p.tty); fg > 0 && fg != pgid {
			_ = syscall.Kill(-fg, sig)
			if !alsoLeader {
				return
			}
		}
	}
	_ = syscall.Kill(-pgid, sig)
}

// kill ends the process after its host went away: SIGHUP, then SIGKILL.
func (p *execProc) kill(grace time.Duration) {
	p.log.Info("host stream gone: stopping process")
	p.signal(syscall.SIGHUP, true)
	go func() {
		select {
		case <-p.done:
		case <-time.After(grace):
			p.signal(syscall.SIGKILL, true)
		}
	}()
}

func foregroundGroup(tty *os.File) int {
	pgid := 0
	_ = withFd(tty, func(fd int) { pgid, _ = unix.IoctlGetInt(fd, unix.TIOCGPGRP) })
	return pgid
}

// readInput applies the host's frames until the stream ends.
func (p *execProc) readInput(st *agentproto.Stream, stdinCh chan<- []byte, grace time.Duration) {
	stdinOpen := true
	closeStdin := func() {
		if stdinOpen {
			stdinOpen = false
			close(stdinCh)
		}
	}
	defer closeStdin()
	for {
		t, payload, err := st.ReadFrame()
		if err != nil {
			select {
			case <-p.done: // normal end: the stream was closed after the exit frame
			default:
				p.kill(grace)
			}
			return
		}
		switch t {
		case agentproto.FrameStdin:
			if !stdinOpen {
				continue
			}
			select {
			case stdinCh <- payload:
			case <-p.done:
			}
		case agentproto.FrameEOF:
			closeStdin()
		case agentproto.FrameResize:
			if len(payload) == 4 && p.tty != nil {
				ws := &unix.Winsize{Row: binary.BigEndian.Uint16(payload), Col: binary.BigEndian.Uint16(payload[2:])}
				var err error
				if cerr := withFd(p.tty, func(fd int) { err = unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, ws) }); cerr != nil {
					err = cerr
				}
				if err != nil {
					p.log.Debug("resize pty", "err", err)
				}
			}
		case agentproto.FrameSignal:
			sig, ok := agentproto.SignalsByName[string(payload)]
			if !ok {
				p.log.Debug("ignored unknown signal", "signal", string(payload))
				continue
			}
			p.signal(sig, false)
		default:
			p.log.Debug("ignored exec frame", "type", string(t))
		}
	}
}

// writeStdin feeds the process; at the end of input it closes the pipe, or
// on a tty types the EOF character (VEOF, ^D).
func (p *execProc) writeStdin(stdinCh <-chan []byte) {
	var w *os.File = p.stdin
	if p.tty != nil {
		w = p.tty
	}
	failed := false
	for chunk := range stdinCh {
		if failed {
			continue // keep draining so readInput never blocks
		}
		if _, err := w.Write(chunk); err != nil {
			failed = true
		}
	}
	if p.tty != nil {
		if !failed {
			_, _ = p.tty.Write([]byte{4})
		}
		return
	}
	_ = p.stdin.Close()
}

// pump forwards one output stream as frames until it ends. Once the
// process has exited, output its background children still write is
// forwarded while it keeps coming (drainIdle) for at most drainMax.
func (p *execProc) pump(st *agentproto.Stream, f *os.File, t byte, grace time.Duration) {
	buf := make([]byte, agentproto.ChunkSize)
	var hardStop time.Time
	for {
		select {
		case <-p.done:
			if hardStop.IsZero() {
				hardStop = time.Now().Add(drainMax)
			}
			_ = f.SetReadDeadline(minTime(time.Now().Add(drainIdle), hardStop))
		default:
		}
		n, err := f.Read(buf)
		if n > 0 {
			if werr := st.WriteFrame(t, buf[:n]); werr != nil {
				p.kill(grace)
				return
			}
		}
		if err != nil {
			return // EOF, a drain deadline, or EIO on a pty whose last slave closed
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
