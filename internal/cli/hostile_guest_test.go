package cli

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/rpc"
)

// guestEscapes is what a guest can put in a process name, on its console or
// in an agent error: OSC 52 (write the host's clipboard), a screen clear,
// a C1 CSI as UTF-8 (which encoding/json leaves raw), DEL and a lone CR.
const guestEscapes = "\x1b]52;c;cHduZWQ=\a\x1b[2J\u009b31m\x7fspoof\r"

// fakeDaemon serves methods on the socket of a scratch BANGER_HOME, as a
// daemon relaying a hostile guest's data would.
func fakeDaemon(t *testing.T, methods ...func(*rpc.Methods)) map[string]string {
	t.Helper()
	env := map[string]string{"BANGER_HOME": t.TempDir()}
	p, err := paths.ResolveUser(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(p.Socket()), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", p.Socket())
	if err != nil {
		t.Fatal(err)
	}
	ms := rpc.NewMethods()
	rpc.Register(ms, api.MethodDaemonPing, func(context.Context, *rpc.Call, api.Empty) (api.Empty, error) { return api.Empty{}, nil })
	for _, reg := range methods {
		reg(ms)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = rpc.NewServer(ms, rpc.ServerOptions{}).Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return env
}

// handle serves m with h (a fakeDaemon method).
func handle[Req, Resp any](m api.Method[Req, Resp], h func(context.Context, *rpc.Call, Req) (Resp, error)) func(*rpc.Methods) {
	return func(ms *rpc.Methods) { rpc.Register(ms, m, h) }
}

// hasControl reports bytes a terminal would act on (newline and tab aside).
func hasControl(s string) bool {
	for _, r := range s {
		if (r < 0x20 && r != '\n' && r != '\t') || (r >= 0x7f && r <= 0x9f) {
			return true
		}
	}
	return false
}

func TestHostileGuestOutputIsInert(t *testing.T) {
	ports := api.PortList{Ports: []api.Port{{
		Proto: "tcp", Address: "0.0.0.0", Port: 8080, PID: 42,
		Command: "evil" + guestEscapes, Cmdline: []string{guestEscapes + "srv", "--x\nFAKE ROW"},
	}}}
	console := "boot ok\r\n" + guestEscapes + "\r\nlast line\r\n"
	env := fakeDaemon(t,
		handle(api.MethodVMPorts, func(_ context.Context, c *rpc.Call, _ api.VMPorts) (api.PortList, error) { return ports, nil }),
		handle(api.MethodVMLogs, func(_ context.Context, c *rpc.Call, _ api.VMLogs) (api.Empty, error) {
			// Cut in the middle of the escape and of a CRLF, as a stream may be.
			for _, part := range []string{console[:12], console[12 : len(console)-1], console[len(console)-1:]} {
				if err := c.Send(api.KindLog, []byte(part)); err != nil {
					return api.Empty{}, err
				}
			}
			return api.Empty{}, nil
		}),
		handle(api.MethodVMCopy, func(_ context.Context, c *rpc.Call, _ api.VMCopy) (api.Empty, error) {
			return api.Empty{}, api.Errorf(api.CodeInternal, "copy out: agent: io: %s", guestEscapes)
		}),
	)

	t.Run("ports table", func(t *testing.T) {
		out, errOut, code := runBanger(t, env, "vm", "ports", "dev")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		if hasControl(out) {
			t.Fatalf("raw control bytes in the table: %q", out)
		}
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 {
			t.Fatalf("a process name added rows to the table: %q", out)
		}
		if !strings.Contains(out, `\x1b]52;c;cHduZWQ=\x07`) {
			t.Fatalf("escaped name not shown: %q", out)
		}
	})
	t.Run("ports json keeps the exact strings, inert", func(t *testing.T) {
		out, _, code := runBanger(t, env, "vm", "ports", "dev", "--json")
		if code != 0 || hasControl(out) {
			t.Fatalf("exit %d, output %q", code, out)
		}
		var got api.PortList
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		if got.Ports[0].Command != ports.Ports[0].Command || got.Ports[0].Cmdline[0] != ports.Ports[0].Cmdline[0] {
			t.Fatalf("json changed the values: %+v", got.Ports[0])
		}
	})
	t.Run("logs", func(t *testing.T) {
		out, errOut, code := runBanger(t, env, "vm", "logs", "dev")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		if hasControl(out) {
			t.Fatalf("raw control bytes in the console: %q", out)
		}
		want := "boot ok\n" + `\x1b]52;c;cHduZWQ=\x07\x1b[2J\u009b31m\x7fspoof\x0d` + "\nlast line\n"
		if out != want {
			t.Fatalf("console:\n got %q\nwant %q", out, want)
		}
	})
	t.Run("logs --raw", func(t *testing.T) {
		out, _, code := runBanger(t, env, "vm", "logs", "--raw", "dev")
		if code != 0 || out != console {
			t.Fatalf("exit %d, --raw changed the bytes: %q", code, out)
		}
	})
	t.Run("agent error", func(t *testing.T) {
		_, errOut, code := runBanger(t, env, "vm", "cp", "dev:/root/x", t.TempDir())
		if code == 0 {
			t.Fatal("copy error not reported")
		}
		if hasControl(errOut) || !strings.Contains(errOut, `\x1b]52`) {
			t.Fatalf("error printed with raw control bytes: %q", errOut)
		}
	})
}

func TestProgressLinesAreInert(t *testing.T) {
	var out strings.Builder
	r := newProgressRenderer(&out)
	r.Handle(progress.Event{Stage: "boot", Message: "console: " + guestEscapes})
	r.Handle(progress.Event{Stage: "layer", Item: guestEscapes, Done: 1, Total: 1})
	if hasControl(out.String()) || !strings.Contains(out.String(), `\x1b]52`) {
		t.Fatalf("progress output: %q", out.String())
	}
}
