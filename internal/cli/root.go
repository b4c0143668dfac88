// Package cli is the banger command line: thin, one file per command. It
// parses flags, talks to the owner daemon, and renders text or --json.
// Errors are returned, never printed here; main prints them once.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/termsafe"
)

// Env is what the CLI needs from the outside world, injected for tests.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
	// Executable is this banger binary; bangerd is looked up beside it.
	Executable string
}

// app carries the resolved environment and global flags to commands.
type app struct {
	env   Env
	debug bool
	log   *slog.Logger
}

// paths resolves the per-user layout; under a system install (and for its
// owner or root) that is the installed daemon's.
func (a *app) paths() (paths.User, error) {
	if p, ok := a.systemPaths(); ok {
		return p, nil
	}
	return paths.ResolveUser(a.env.Getenv)
}

// UsageError marks errors caused by how the command was called (exit 2).
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// ExitError carries a specific exit code (e.g. the guest command's) with no
// message of its own to print.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// ExitCode maps an error returned by Execute to the process exit code.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	var ue *UsageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// NewRootCommand builds the banger command tree.
func NewRootCommand(env Env) *cobra.Command {
	a := &app{env: env}
	root := &cobra.Command{
		Use:   "banger",
		Short: "Fresh, isolated Linux microVMs for developers",
		Long: `banger gives you a fresh, isolated Linux microVM in moments, made from a
container image or a distro image, reachable by name, by SSH and through a
guest agent, and torn down as easily.

The banger CLI talks to bangerd, the owner daemon, over a unix socket; it
starts the daemon when needed. BANGER_HOME moves all state under one directory.`,
		Example: `  banger vm run --rm -- uname -a          # a fresh VM, one command, gone
  banger vm create --name dev --start && banger vm ssh dev
  banger image pull docker.io/library/alpine:3.20
  banger vm ls --json
  banger doctor`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			level := slog.LevelWarn
			if a.debug {
				level = slog.LevelDebug
			}
			a.log = slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: level}))
			return nil
		},
	}
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	root.PersistentFlags().BoolVar(&a.debug, "debug", false, "log debug detail to stderr (and start the daemon with --debug)")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &UsageError{Err: fmt.Errorf("%w\nSee '%s --help'", err, cmd.CommandPath())}
	})
	root.AddCommand(
		newVersionCommand(a),
		newDaemonCommand(a),
		newOpsCommand(a),
		newVMCommand(a),
		newKernelCommand(a),
		newImageCommand(a),
		newDoctorCommand(a),
		newSystemCommand(a),
		newUpdateCommand(a),
		newDNSCommand(a),
		newConfigCommand(a),
		newMCPCommand(a),
		newSnapshotCommand(a),
		newTemplateCommand(a),
	)
	root.AddCommand(newEventsCommand(a))
	root.AddCommand(newPlanCommand(a))
	return root
}

// Execute runs the CLI and returns the process exit code, printing any error
// once on stderr.
func Execute(ctx context.Context, env Env, args []string) int {
	root := NewRootCommand(env)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err != nil {
		var ee *ExitError
		if !errors.As(err, &ee) {
			// Errors quote guest text (agent messages, console lines):
			// printed inert, newlines kept.
			fmt.Fprintf(env.Stderr, "banger: %s\n", termsafe.Text(err.Error()))
		}
		code := ExitCode(err)
		if code == 1 && isUsage(cmd, err) {
			code = 2
		}
		return code
	}
	return 0
}

// isUsage recognises cobra's own argument errors (unknown command, wrong
// argument count), which it returns as plain errors.
func isUsage(cmd *cobra.Command, err error) bool {
	if cmd == nil {
		return false
	}
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires at least", "requires at most", "received ", "invalid argument"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// DefaultEnv is the real process environment.
func DefaultEnv() Env {
	exe, _ := os.Executable()
	return Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Executable: exe}
}
