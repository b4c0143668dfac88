package cmdmain

import (
	"bytes"
	"context"
	"flag"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		args     []string
		code     int
		ok       bool
		inOutput string
	}{
		{nil, ExitOK, true, ""},
		{[]string{"--debug"}, ExitOK, true, ""},
		{[]string{"--help"}, ExitOK, false, "Usage"},
		{[]string{"--nope"}, ExitUsage, false, "flag provided but not defined"},
		{[]string{"extra", "args"}, ExitUsage, false, `tool: unexpected arguments ["extra" "args"] (see tool --help)`},
	} {
		var out bytes.Buffer
		fs := flag.NewFlagSet("tool", flag.ContinueOnError)
		fs.SetOutput(&out)
		fs.Bool("debug", false, "")
		code, ok := Parse(fs, c.args)
		if code != c.code || ok != c.ok || !strings.Contains(out.String(), c.inOutput) {
			t.Errorf("Parse(%q) = %d, %v, output %q; want %d, %v with %q", c.args, code, ok, out.String(), c.code, c.ok, c.inOutput)
		}
	}
}

func TestLoggerLevel(t *testing.T) {
	var quiet, loud bytes.Buffer
	Logger(&quiet, false).Debug("detail")
	Logger(&loud, true).Debug("detail")
	if quiet.Len() != 0 || !strings.Contains(loud.String(), "msg=detail") {
		t.Fatalf("debug lines: without --debug %q, with %q", quiet.String(), loud.String())
	}
}

func TestSignalContextEndsOnSIGTERM(t *testing.T) {
	ctx, stop := SignalContext(t.Context())
	defer stop()
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("SIGTERM did not end the context")
	}
	if context.Cause(ctx) == nil {
		t.Fatal("no cause")
	}
}

func TestEnsureSbinOnPath(t *testing.T) {
	t.Setenv("PATH", "/usr/bin:/sbin")
	EnsureSbinOnPath()
	EnsureSbinOnPath()
	if got := strings.Join(strings.Split(os.Getenv("PATH"), ":"), " "); got != "/usr/bin /sbin /usr/local/sbin /usr/sbin" {
		t.Fatalf("PATH = %q", got)
	}
}
