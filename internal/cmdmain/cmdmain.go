// Package cmdmain is what banger's host commands (banger, bangerd,
// banger-helper) do the same way around their own flags: exit codes, a
// context that SIGINT and SIGTERM end, the log handler, the sbin
// directories on PATH, and flag parsing that maps --help and usage errors
// to exit codes. The guest agent keeps its own (it links nothing more than
// it must).
package cmdmain

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/bangerdev/banger/internal/opid"
)

// Exit codes of every banger command.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// SignalContext is parent ended by SIGINT or SIGTERM.
func SignalContext(parent context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

// Logger writes text lines to w, debug detail only when asked; every line
// logged with a request's context carries its op_id and vm.
func Logger(w io.Writer, debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	return slog.New(opid.NewHandler(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})))
}

// EnsureSbinOnPath adds the sbin directories to PATH: a process started
// from a regular user's shell (Debian leaves them out) must still find
// mkfs.ext4, e2fsck, resize2fs, debugfs and debootstrap.
func EnsureSbinOnPath() {
	path := os.Getenv("PATH")
	for _, d := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		if !strings.Contains(":"+path+":", ":"+d+":") {
			path += ":" + d
		}
	}
	os.Setenv("PATH", strings.TrimPrefix(path, ":"))
}

// Parse parses args with fs, which takes no positional arguments. When ok
// is false the command ends with code: ExitOK after --help, ExitUsage after
// a bad flag (fs printed why) or an extra argument (said on fs's output).
func Parse(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK, false
		}
		return ExitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected arguments %q (see %s --help)\n", fs.Name(), fs.Args(), fs.Name())
		return ExitUsage, false
	}
	return ExitOK, true
}
