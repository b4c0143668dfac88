package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
)

type execOptions struct {
	argv   []string
	env    []string
	dir    string
	stdin  bool
	tty    bool
	detach bool
}

func newVMExecCommand(a *app) *cobra.Command {
	var o execOptions
	cmd := &cobra.Command{
		Use:   "exec NAME [flags] -- COMMAND [ARG...]",
		Short: "Run a command in a VM through its guest agent (no sshd needed)",
		Long: `Run a command in a running VM through the guest agent. Output streams
back; the exit code is the command's. -i streams stdin, -t allocates a
terminal (window size follows yours). Ctrl-C reaches the guest process.
The command ends if banger exits or loses the daemon.

With --detach the guest agent keeps the command running on its own and
banger prints its session id: banger vm attach NAME ID joins it (replaying
its recent output), banger vm sessions NAME lists it. With --detach, -i
keeps the session's stdin open for vm attach -i.`,
		Example: `  banger vm exec dev -- uname -a
  echo hi | banger vm exec -i dev -- cat
  banger vm exec -it dev -- bash
  banger vm exec -e FOO=bar -w /tmp dev -- sh -c 'echo $FOO; pwd'
  banger vm exec --detach dev -- sh -c 'make -j2 2>&1'`,
		Args:              cobra.MinimumNArgs(2),
		ValidArgsFunction: a.completeVMNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return &UsageError{Err: fmt.Errorf("usage: banger vm exec NAME [flags] -- COMMAND [ARG...]")}
			}
			o.argv = args[1:]
			if o.detach {
				return a.execDetached(cmd.Context(), args[0], o) // vm_attach.go
			}
			return a.execIn(cmd.Context(), args[0], o)
		},
	}
	cmd.Flags().BoolVarP(&o.stdin, "interactive", "i", false, "stream stdin to the command")
	cmd.Flags().BoolVarP(&o.tty, "tty", "t", false, "allocate a terminal")
	cmd.Flags().StringArrayVarP(&o.env, "env", "e", nil, "set an environment variable (K=V), repeatable")
	cmd.Flags().StringVarP(&o.dir, "workdir", "w", "", "working directory in the guest")
	cmd.Flags().BoolVarP(&o.detach, "detach", "d", false, "keep the command running in the guest and print its session id (see vm attach)")
	return cmd
}

// execIn runs a command in a VM and returns an *ExitError carrying the
// guest command's exit code when it is not 0.
func (a *app) execIn(ctx context.Context, name string, o execOptions) error {
	c, err := a.client(ctx)
	if err != nil {
		return err
	}
	p := api.VMExec{Name: name, Argv: o.argv, Env: o.env, Dir: o.dir, TTY: o.tty, Stdin: o.stdin}
	var restore func()
	if o.tty {
		if f, ok := a.env.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			if w, h, err := term.GetSize(int(f.Fd())); err == nil {
				p.Cols, p.Rows = uint16(w), uint16(h)
			}
			if st, err := term.MakeRaw(int(f.Fd())); err == nil {
				restore = func() { _ = term.Restore(int(f.Fd()), st) }
			}
		}
	}
	if restore != nil {
		defer restore()
	}
	// The call's context must not end on Ctrl-C: the signal goes to the
	// guest instead, and the command's exit ends the call.
	s, err := rpc.OpenStream(context.WithoutCancel(ctx), c, api.MethodVMExec, p)
	if err != nil {
		return err
	}
	defer s.Close()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGWINCH)
	defer signal.Stop(sigs)
	go func() {
		for sig := range sigs {
			if sig == syscall.SIGWINCH {
				if f, ok := a.env.Stdin.(*os.File); ok {
					if w, h, err := term.GetSize(int(f.Fd())); err == nil {
						_ = s.Send(api.KindResize, api.WinSize{Rows: uint16(h), Cols: uint16(w)})
					}
				}
				continue
			}
			_ = s.Send(api.KindSignal, int(sig.(syscall.Signal)))
		}
	}()
	if o.stdin || o.tty {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := a.env.Stdin.Read(buf)
				if n > 0 {
					if s.Send(api.KindStdin, buf[:n]) != nil {
						return
					}
				}
				if err != nil {
					_ = s.Send(api.KindStdinEOF, nil)
					return
				}
			}
		}()
	}
	for {
		f, err := s.Next()
		if err != nil {
			return err
		}
		switch f.Type {
		case rpc.FrameData:
			var b []byte
			if err := json.Unmarshal(f.Payload, &b); err != nil {
				return fmt.Errorf("decode %s data: %w", f.Kind, err)
			}
			var w io.Writer = a.env.Stdout
			if f.Kind == api.KindStderr {
				w = a.env.Stderr
			}
			_, _ = w.Write(b)
		case rpc.FrameResult:
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
