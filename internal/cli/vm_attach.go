package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/termsafe"
)

// Detach keys: Ctrl-\ alone, or Ctrl-P then Ctrl-Q (docker's sequence).
const (
	keyCtrlBackslash = 0x1c
	keyCtrlP         = 0x10
	keyCtrlQ         = 0x11
)

func newVMAttachCommand(a *app) *cobra.Command {
	var stdin, raw bool
	cmd := &cobra.Command{
		Use:   "attach NAME SESSION",
		Short: "Re-attach to a detached session (banger vm exec --detach)",
		Long: `Join a session started with banger vm exec --detach. Its buffered output
is replayed first (the last [sessions] replay_bytes of it, 1 MiB by default),
then live output follows until the command exits, whose exit code becomes
banger's.

A session started with -t gets your terminal (raw mode; stdin is typed into
the session). A session started without one shows its stdout and stderr;
with -i, your stdin is sent to it and its end closes the session's stdin
(the session must have been started with -i).

Output is the guest's: unless a tty session is shown on your terminal, it
is escaped as vm logs does (controls and escape sequences made visible,
newlines kept); --raw writes the bytes as they are.

Detach without stopping the command: Ctrl-\, or Ctrl-P then Ctrl-Q. Ctrl-C
reaches the command as with vm exec. The session lives in the guest agent:
a daemon restart does not end it; a VM stop does.`,
		Example: `  id=$(banger vm exec --detach dev -- sh -c 'make test 2>&1')
  banger vm attach dev "$id"
  banger vm sessions dev`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: a.completeVMNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.attach(cmd.Context(), args[0], args[1], stdin, raw)
		},
	}
	cmd.Flags().BoolVarP(&stdin, "interactive", "i", false, "send stdin to a session without a terminal (its end closes the session's stdin)")
	cmd.Flags().BoolVar(&raw, "raw", false, "write the guest's output unescaped")
	return cmd
}

// execDetached is vm exec --detach: it prints the new session's id.
func (a *app) execDetached(ctx context.Context, name string, o execOptions) error {
	p := api.VMExec{Name: name, Argv: o.argv, Env: o.env, Dir: o.dir, TTY: o.tty, Stdin: o.stdin, Detach: true}
	if f, ok := a.env.Stdin.(*os.File); ok && o.tty && term.IsTerminal(int(f.Fd())) {
		if w, h, err := term.GetSize(int(f.Fd())); err == nil {
			p.Cols, p.Rows = uint16(w), uint16(h)
		}
	}
	res, err := call(ctx, a, api.MethodVMExec, p)
	if err != nil {
		return err
	}
	if res.Session == nil {
		return fmt.Errorf("vm exec --detach in vm %q: the daemon answered without a session id (is it older than this client? restart it: banger daemon stop)", name)
	}
	_, err = fmt.Fprintln(a.env.Stdout, res.Session.ID)
	return err
}

// errDetached ends an attach the user left on purpose.
var errDetached = errors.New("detached")

// attach relays the terminal to a detached session until it exits or the
// user detaches.
func (a *app) attach(ctx context.Context, name, session string, interactive, raw bool) error {
	c, err := a.client(ctx)
	if err != nil {
		return err
	}
	inFile, _ := a.env.Stdin.(*os.File)
	inTerm := inFile != nil && term.IsTerminal(int(inFile.Fd()))
	outFile, _ := a.env.Stdout.(*os.File)
	outTerm := outFile != nil && term.IsTerminal(int(outFile.Fd()))
	p := api.VMAttach{Name: name, Session: session, Stdin: true}
	if inTerm {
		if w, h, err := term.GetSize(int(inFile.Fd())); err == nil {
			p.Cols, p.Rows = uint16(w), uint16(h)
		}
	}
	// Ctrl-C goes to the guest; only a detach or the exit ends the call.
	s, err := rpc.OpenStream(context.WithoutCancel(ctx), c, api.MethodVMAttach, p)
	if err != nil {
		return err
	}
	defer s.Close()

	detach := make(chan struct{})
	var detachOnce bool
	doDetach := func() {
		if !detachOnce {
			detachOnce = true
			close(detach)
			_ = s.Close() // the daemon sees the call end: the session goes on
		}
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGWINCH)
	defer signal.Stop(sigs)
	detachReq := make(chan struct{}, 1)
	go func() {
		for sig := range sigs {
			switch sig {
			case syscall.SIGQUIT: // Ctrl-\ on a cooked terminal
				select {
				case detachReq <- struct{}{}:
				default:
				}
			case syscall.SIGWINCH:
				if inTerm {
					if w, h, err := term.GetSize(int(inFile.Fd())); err == nil {
						_ = s.Send(api.KindResize, api.WinSize{Rows: uint16(h), Cols: uint16(w)})
					}
				}
			default:
				_ = s.Send(api.KindSignal, int(sig.(syscall.Signal)))
			}
		}
	}()

	var restore func()
	defer func() {
		if restore != nil {
			restore()
		}
	}()
	out, errOut := a.env.Stdout, a.env.Stderr
	frames := make(chan rpc.Frame)
	nextErr := make(chan error, 1)
	go func() {
		for {
			f, err := s.Next()
			if err != nil {
				nextErr <- err
				return
			}
			select {
			case frames <- f:
			case <-detach:
				return
			}
		}
	}()
	for {
		select {
		case <-detachReq:
			doDetach()
		case <-detach:
			if restore != nil {
				restore()
				restore = nil
			}
			fmt.Fprintf(a.env.Stderr, "banger: detached from session %s (banger vm attach %s %s to return)\n", session, name, session)
			return nil
		case err := <-nextErr:
			if detachOnce {
				continue // the detach case reports it
			}
			return err
		case f := <-frames:
			switch f.Type {
			case rpc.FrameData:
				switch f.Kind {
				case api.KindAttached:
					var ds api.DetachedSession
					if err := json.Unmarshal(f.Payload, &ds); err != nil {
						return fmt.Errorf("decode attach: %w", err)
					}
					if ds.TTY && inTerm {
						if st, err := term.MakeRaw(int(inFile.Fd())); err == nil {
							restore = func() { _ = term.Restore(int(inFile.Fd()), st) }
						}
					}
					// A tty session shown on a terminal gets its bytes raw,
					// as vm exec -t. Anything else is guest text for a
					// human, escaped as vm logs does (files and pipes too:
					// they reach a terminal later); --raw opts out.
					if !raw && !(ds.TTY && outTerm) {
						tw, te := termsafe.NewWriter(a.env.Stdout), termsafe.NewWriter(a.env.Stderr)
						defer tw.Flush()
						defer te.Flush()
						out, errOut = tw, te
					}
					switch {
					case ds.TTY && inTerm:
						go a.sendAttachInput(s.Stream, detachReq, true, false)
					case !ds.TTY && interactive:
						go a.sendAttachInput(s.Stream, detachReq, false, true)
					}
				case api.KindStdout, api.KindStderr:
					var b []byte
					if err := json.Unmarshal(f.Payload, &b); err != nil {
						return fmt.Errorf("decode %s data: %w", f.Kind, err)
					}
					w := out
					if f.Kind == api.KindStderr {
						w = errOut
					}
					_, _ = w.Write(b)
				case api.KindLost:
					var n uint64
					if json.Unmarshal(f.Payload, &n) == nil {
						fmt.Fprintf(a.env.Stderr, "\r\nbanger: %d bytes of output were dropped before this client read them (it fell behind the replay ring)\r\n", n)
					}
				}
			case rpc.FrameResult:
				if restore != nil {
					restore()
					restore = nil
				}
				res, err := s.Result(f)
				if err != nil {
					return err
				}
				if res.ExitCode != 0 {
					return &ExitError{Code: res.ExitCode}
				}
				return nil
			}
		}
	}
}

// sendAttachInput streams stdin to the session. On a raw terminal the
// detach keys are caught here (and not sent); sendEOF passes the end of
// stdin on (pipes with -i).
func (a *app) sendAttachInput(s *rpc.Stream, detachReq chan<- struct{}, scanKeys, sendEOF bool) {
	var sc detachScanner
	buf := make([]byte, 32<<10)
	for {
		n, err := a.env.Stdin.Read(buf)
		if n > 0 {
			b := buf[:n]
			detach := false
			if scanKeys {
				b, detach = sc.feed(b)
			}
			if len(b) > 0 && s.Send(api.KindStdin, b) != nil {
				return
			}
			if detach {
				select {
				case detachReq <- struct{}{}:
				default:
				}
				return
			}
		}
		if err != nil {
			if sendEOF && errors.Is(err, io.EOF) {
				_ = s.Send(api.KindStdinEOF, nil)
			}
			return
		}
	}
}

// detachScanner finds the detach keys in typed input: Ctrl-\, or Ctrl-P
// followed by Ctrl-Q. A Ctrl-P is held back until the next byte shows
// whether it starts the sequence.
type detachScanner struct {
	pendingP bool
}

// feed returns the bytes to send and whether a detach key was typed
// (bytes after it are dropped).
func (d *detachScanner) feed(in []byte) ([]byte, bool) {
	out := make([]byte, 0, len(in)+1)
	for _, b := range in {
		if d.pendingP {
			d.pendingP = false
			if b == keyCtrlQ {
				return out, true
			}
			out = append(out, keyCtrlP)
		}
		switch b {
		case keyCtrlBackslash:
			return out, true
		case keyCtrlP:
			d.pendingP = true
		default:
			out = append(out, b)
		}
	}
	return out, false
}
