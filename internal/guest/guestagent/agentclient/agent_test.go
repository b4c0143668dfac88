package agentclient

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentserver"
	"github.com/bangerdev/banger/internal/rpc"
)

func forEachTransport(t *testing.T, opts agentserver.ServerOptions, fn func(t *testing.T, c *Client)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			fn(t, tr.start(t, newTestServer(opts)))
		})
	}
}

func TestHealth(t *testing.T) {
	start := time.Now().Add(-3 * time.Second)
	forEachTransport(t, agentserver.ServerOptions{StartTime: start}, func(t *testing.T, c *Client) {
		ctx := rpc.WithOpID(testCtx(t, 20*time.Second), "op-health")
		h, err := c.Health(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if h.BootID != "boot-test" || h.Version != "v-test" || h.PID != os.Getpid() {
			t.Fatalf("health = %+v", h)
		}
		if h.UptimeSeconds < 3 || h.UptimeSeconds > 60 {
			t.Fatalf("uptime %v, want about 3s", h.UptimeSeconds)
		}
	})
}

func TestUnknownMethodIsTypedError(t *testing.T) {
	forEachTransport(t, agentserver.ServerOptions{}, func(t *testing.T, c *Client) {
		err := c.unary(testCtx(t, 20*time.Second), "no.such.method", nil, nil)
		var ae *agentproto.Error
		if !errors.As(err, &ae) || ae.Code != agentproto.CodeUnknownMethod {
			t.Fatalf("err = %v, want code %s", err, agentproto.CodeUnknownMethod)
		}
		if !errors.Is(err, &agentproto.Error{Code: agentproto.CodeUnknownMethod}) {
			t.Fatalf("errors.Is by code failed for %v", err)
		}
	})
}

func TestPoweroff(t *testing.T) {
	t.Run("unsupported", func(t *testing.T) {
		c := startUnix(t, newTestServer(agentserver.ServerOptions{}))
		err := c.Poweroff(testCtx(t, 10*time.Second))
		if !errors.Is(err, &agentproto.Error{Code: agentproto.CodeUnsupported}) {
			t.Fatalf("err = %v, want %s", err, agentproto.CodeUnsupported)
		}
	})
	t.Run("calls injected func", func(t *testing.T) {
		called := make(chan struct{}, 1)
		c := startYamux(t, newTestServer(agentserver.ServerOptions{Poweroff: func(context.Context) error {
			called <- struct{}{}
			return nil
		}}))
		if err := c.Poweroff(testCtx(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-called:
		case <-time.After(5 * time.Second):
			t.Fatal("poweroff func not called")
		}
	})
}

func runExec(t *testing.T, c *Client, req agentproto.ExecRequest, stdin io.Reader) (int, string, string) {
	t.Helper()
	var out, errOut syncBuffer
	code, err := c.Exec(testCtx(t, 60*time.Second), req, stdin, &out, &errOut, nil, nil)
	if err != nil {
		t.Fatalf("exec %v: %v", req.Argv, err)
	}
	return code, out.String(), errOut.String()
}

func TestExecExitCodes(t *testing.T) {
	forEachTransport(t, agentserver.ServerOptions{}, func(t *testing.T, c *Client) {
		for _, tc := range []struct {
			argv []string
			code int
		}{
			{[]string{"true"}, 0},
			{[]string{"sh", "-c", "exit 3"}, 3},
			{[]string{"sh", "-c", "kill -TERM $$"}, 128 + int(syscall.SIGTERM)},
			{[]string{"sh", "-c", "kill -KILL $$"}, 128 + int(syscall.SIGKILL)},
		} {
			code, _, _ := runExec(t, c, agentproto.ExecRequest{Argv: tc.argv}, nil)
			if code != tc.code {
				t.Errorf("%v: exit %d, want %d", tc.argv, code, tc.code)
			}
		}
		code, out, errOut := runExec(t, c, agentproto.ExecRequest{
			Argv: []string{"sh", "-c", `echo "$GREETING from $(pwd)"; echo oops >&2`},
			Env:  []string{"GREETING=hello"},
			Dir:  "/tmp",
		}, nil)
		if code != 0 || out != "hello from /tmp\n" || errOut != "oops\n" {
			t.Fatalf("code %d stdout %q stderr %q", code, out, errOut)
		}
		_, err := c.Exec(testCtx(t, 10*time.Second), agentproto.ExecRequest{Argv: []string{"no-such-binary-xyz"}}, nil, nil, nil, nil, nil)
		if !errors.Is(err, &agentproto.Error{Code: agentproto.CodeNotFound}) {
			t.Fatalf("missing binary: err = %v, want %s", err, agentproto.CodeNotFound)
		}
	})
}

func TestExecStdin(t *testing.T) {
	forEachTransport(t, agentserver.ServerOptions{}, func(t *testing.T, c *Client) {
		data := make([]byte, 3<<20+17)
		_, _ = rand.Read(data)
		var out syncBuffer
		code, err := c.Exec(testCtx(t, 60*time.Second), agentproto.ExecRequest{Argv: []string{"cat"}}, bytes.NewReader(data), &out, nil, nil, nil)
		if err != nil || code != 0 {
			t.Fatalf("cat: code %d err %v", code, err)
		}
		if got := out.String(); got != string(data) {
			t.Fatalf("cat echoed %d bytes, want %d identical", len(got), len(data))
		}
		code, wc, _ := runExec(t, c, agentproto.ExecRequest{Argv: []string{"wc", "-c"}}, strings.NewReader("twelve bytes"))
		if code != 0 || strings.TrimSpace(wc) != "12" {
			t.Fatalf("wc -c: code %d out %q", code, wc)
		}
		// No stdin at all: the process sees EOF at once.
		code, wc, _ = runExec(t, c, agentproto.ExecRequest{Argv: []string{"wc", "-c"}}, nil)
		if code != 0 || strings.TrimSpace(wc) != "0" {
			t.Fatalf("wc -c without stdin: code %d out %q", code, wc)
		}
	})
}

func TestExecSignals(t *testing.T) {
	forEachTransport(t, agentserver.ServerOptions{}, func(t *testing.T, c *Client) {
		t.Run("sleep interrupted", func(t *testing.T) {
			sigs := make(chan os.Signal, 1)
			var out syncBuffer
			res := make(chan [2]any, 1)
			go func() {
				code, err := c.Exec(testCtx(t, 60*time.Second), agentproto.ExecRequest{Argv: []string{"sh", "-c", "echo started; exec sleep 30"}}, nil, &out, nil, nil, sigs)
				res <- [2]any{code, err}
			}()
			waitFor(t, 20*time.Second, "sleep to start", func() bool { return strings.Contains(out.String(), "started") })
			time.Sleep(50 * time.Millisecond) // let exec replace the shell
			sigs <- syscall.SIGINT
			select {
			case r := <-res:
				if r[1] != nil || r[0].(int) != 128+int(syscall.SIGINT) {
					t.Fatalf("code %v err %v, want %d", r[0], r[1], 128+int(syscall.SIGINT))
				}
			case <-time.After(20 * time.Second):
				t.Fatal("sleep 30 did not end after SIGINT")
			}
		})
		t.Run("trap", func(t *testing.T) {
			sigs := make(chan os.Signal, 1)
			var out syncBuffer
			res := make(chan [2]any, 1)
			script := `trap 'echo trapped TERM; exit 7' TERM; echo ready; i=0; while [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; exit 1`
			go func() {
				code, err := c.Exec(testCtx(t, 60*time.Second), agentproto.ExecRequest{Argv: []string{"sh", "-c", script}}, nil, &out, nil, nil, sigs)
				res <- [2]any{code, err}
			}()
			waitFor(t, 20*time.Second, "trap script to start", func() bool { return strings.Contains(out.String(), "ready") })
			sigs <- syscall.SIGTERM
			select {
			case r := <-res:
				if r[1] != nil || r[0].(int) != 7 || !strings.Contains(out.String(), "trapped TERM") {
					t.Fatalf("code %v err %v out %q", r[0], r[1], out.String())
				}
			case <-time.After(20 * time.Second):
				t.Fatal("trap script did not end after SIGTERM")
			}
		})
	})
}

func TestExecTTY(t *testing.T) {
	forEachTransport(t, agentserver.ServerOptions{}, func(t *testing.T, c *Client) {
		code, out, _ := runExec(t, c, agentproto.ExecRequest{Argv: []string{"tty"}, TTY: true}, nil)
		if code != 0 || !regexp.MustCompile(`^/dev/pts/\d+\r?\n$`).MatchString(out) {
			t.Fatalf("tty: code %d out %q", code, out)
		}
		code, out, _ = runExec(t, c, agentproto.ExecRequest{Argv: []string{"stty", "size"}, TTY: true, Rows: 33, Cols: 111}, nil)
		if code != 0 || strings.TrimSpace(out) != "33 111" {
			t.Fatalf("stty size: code %d out %q", code, out)
		}
		// stdin EOF on a tty arrives as ^D: cat ends.
		code, out, _ = runExec(t, c, agentproto.ExecRequest{Argv: []string{"cat"}, TTY: true}, strings.NewReader("hello pty\n"))
		if code != 0 || strings.Count(out, "hello pty") != 2 { // the echo and cat's copy
			t.Fatalf("cat on tty: code %d out %q", code, out)
		}

		// A resize reaches the pty (and SIGWINCH the foreground group).
		resize := make(chan agentproto.WinSize, 1)
		var rout syncBuffer
		script := `trap 'echo winch' WINCH; echo go; i=0; while [ $i -lt 400 ]; do s=$(stty size); if [ "$s" = "40 100" ]; then sleep 0.2; echo "size $s"; exit 0; fi; sleep 0.05; i=$((i+1)); done; exit 1`
		res := make(chan [2]any, 1)
		go func() {
			code, err := c.Exec(testCtx(t, 60*time.Second), agentproto.ExecRequest{Argv: []string{"sh", "-c", script}, TTY: true}, nil, &rout, nil, resize, nil)
			res <- [2]any{code, err}
		}()
		waitFor(t, 20*time.Second, "resize script to start", func() bool { return strings.Contains(rout.String(), "go") })
		resize <- agentproto.WinSize{Rows: 40, Cols: 100}
		select {
		case r := <-res:
			if r[1] != nil || r[0].(int) != 0 || !strings.Contains(rout.String(), "size 40 100") || !strings.Contains(rout.String(), "winch") {
				t.Fatalf("resize: code %v err %v out %q", r[0], r[1], rout.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatal("resize not seen by stty")
		}
	})
}

func TestExecConcurrent(t *testing.T) {
	forEachTransport(t, agentserver.ServerOptions{}, func(t *testing.T, c *Client) {
		const n = 20
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				var out syncBuffer
				in := strings.NewReader(strings.Repeat(strconv.Itoa(i), 1000))
				code, err := c.Exec(testCtx(t, 120*time.Second), agentproto.ExecRequest{Argv: []string{"sh", "-c", `echo "job $0"; wc -c; exit $0`, strconv.Itoa(i)}}, in, &out, nil, nil, nil)
				want := fmt.Sprintf("job %d\n%d\n", i, len(strings.Repeat(strconv.Itoa(i), 1000)))
				switch {
				case err != nil:
					errs <- fmt.Errorf("job %d: %w", i, err)
				case code != i || strings.ReplaceAll(out.String(), " ", "") != strings.ReplaceAll(want, " ", ""):
					errs <- fmt.Errorf("job %d: code %d out %q want %q", i, code, out.String(), want)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// A process whose host stream dies is hung up on: no orphans.
func TestExecHostGoneKillsProcess(t *testing.T) {
	forEachTransport(t, agentserver.ServerOptions{KillGrace: time.Second}, func(t *testing.T, c *Client) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var out syncBuffer
		res := make(chan error, 1)
		go func() {
			// The trap ignores SIGHUP, so only the SIGKILL after the grace ends it.
			_, err := c.Exec(ctx, agentproto.ExecRequest{Argv: []string{"sh", "-c", `trap '' HUP; echo $$; exec sleep 30`}}, nil, &out, nil, nil, nil)
			res <- err
		}()
		waitFor(t, 20*time.Second, "pid line", func() bool { return strings.Contains(out.String(), "\n") })
		pid, err := strconv.Atoi(strings.TrimSpace(out.String()))
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		select {
		case err := <-res:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("exec err = %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("exec did not return after ctx cancel")
		}
		waitFor(t, 15*time.Second, "orphaned sleep to be killed and reaped", func() bool {
			return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
		})
	})
}

func TestPorts(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tcp.Close() }) // subtests run in parallel, after this returns
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = udp.Close() })
	tcp6, err6 := net.Listen("tcp6", "[::1]:0")
	if err6 == nil {
		t.Cleanup(func() { _ = tcp6.Close() })
	}
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	want := []agentproto.Port{
		{Proto: "tcp", Address: "127.0.0.1", Port: tcp.Addr().(*net.TCPAddr).Port},
		{Proto: "udp", Address: "127.0.0.1", Port: udp.LocalAddr().(*net.UDPAddr).Port},
	}
	if err6 == nil {
		want = append(want, agentproto.Port{Proto: "tcp6", Address: "::1", Port: tcp6.Addr().(*net.TCPAddr).Port})
	}
	forEachTransport(t, agentserver.ServerOptions{}, func(t *testing.T, c *Client) {
		ports, err := c.Ports(testCtx(t, 30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			p, ok := findPort(ports, w)
			if !ok {
				t.Fatalf("%s %s:%d not in %+v", w.Proto, w.Address, w.Port, ports)
			}
			if p.PID != os.Getpid() || p.Command != strings.TrimSpace(string(comm)) || p.Inode == 0 || len(p.Cmdline) == 0 {
				t.Errorf("%s port %d: pid %d comm %q inode %d cmdline %v; want pid %d comm %q", p.Proto, p.Port, p.PID, p.Command, p.Inode, p.Cmdline, os.Getpid(), strings.TrimSpace(string(comm)))
			}
		}
		// A connected client socket is not a listener.
		conn, err := net.Dial("tcp", tcp.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ports, err = c.Ports(testCtx(t, 30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := findPort(ports, agentproto.Port{Proto: "tcp", Address: "127.0.0.1", Port: conn.LocalAddr().(*net.TCPAddr).Port}); ok {
			t.Errorf("client socket listed as listening")
		}
	})
}

func findPort(ports []agentproto.Port, w agentproto.Port) (agentproto.Port, bool) {
	for _, p := range ports {
		if p.Proto == w.Proto && p.Address == w.Address && p.Port == w.Port {
			return p, true
		}
	}
	return agentproto.Port{}, false
}

func TestWatchPorts(t *testing.T) {
	forEachTransport(t, agentserver.ServerOptions{}, func(t *testing.T, c *Client) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		snaps := make(chan []agentproto.Port, 100)
		done := make(chan error, 1)
		go func() {
			done <- c.WatchPorts(ctx, func(p []agentproto.Port) {
				select {
				case snaps <- p:
				default:
				}
			})
		}()
		select {
		case <-snaps:
		case <-time.After(20 * time.Second):
			t.Fatal("no first agenttest.Snapshot")
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		want := agentproto.Port{Proto: "tcp", Address: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port}
		deadline := time.After(20 * time.Second)
	wait:
		for {
			select {
			case p := <-snaps:
				if got, ok := findPort(p, want); ok {
					if got.PID != os.Getpid() {
						t.Errorf("watched port pid %d, want %d", got.PID, os.Getpid())
					}
					break wait
				}
			case <-deadline:
				t.Fatal("new listener never appeared in a agenttest.Snapshot")
			}
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("watch ended with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("watch did not end after cancel")
		}
	})
}

func TestForward(t *testing.T) {
	// An echo server that half-closes after echoing everything.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	forEachTransport(t, agentserver.ServerOptions{}, func(t *testing.T, c *Client) {
		conn, err := c.Forward(testCtx(t, 60*time.Second), port)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		data := make([]byte, 16<<20)
		_, _ = rand.Read(data)
		start := time.Now()
		var got []byte
		readDone := make(chan error, 1)
		go func() {
			var err error
			got, err = io.ReadAll(conn) // ends only if the echo's half-close comes back
			readDone <- err
		}()
		if _, err := conn.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-readDone:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("forwarded echo did not finish")
		}
		el := time.Since(start)
		if !bytes.Equal(got, data) {
			t.Fatalf("echoed %d bytes, want %d identical", len(got), len(data))
		}
		mbps := float64(2*len(data)) / el.Seconds() / (1 << 20)
		t.Logf("forward: %d MiB each way in %s (%.0f MiB/s)", len(data)>>20, el, mbps)
		if mbps < 2 {
			t.Errorf("forward throughput %.1f MiB/s is implausibly low", mbps)
		}

		_, err = c.Forward(testCtx(t, 10*time.Second), "1")
		if !errors.Is(err, &agentproto.Error{Code: agentproto.CodeDialFailed}) {
			t.Fatalf("forward to a closed port: err = %v", err)
		}
		_, err = c.Forward(testCtx(t, 10*time.Second), "127.0.0.1:99999")
		if !errors.Is(err, &agentproto.Error{Code: agentproto.CodeBadRequest}) {
			t.Fatalf("forward to a bad port: err = %v", err)
		}
	})
}

func TestSetClock(t *testing.T) {
	t.Run("unsupported", func(t *testing.T) {
		c := startUnix(t, newTestServer(agentserver.ServerOptions{}))
		err := c.SetClock(testCtx(t, 10*time.Second), time.Now())
		if !errors.Is(err, &agentproto.Error{Code: agentproto.CodeUnsupported}) {
			t.Fatalf("err = %v, want %s", err, agentproto.CodeUnsupported)
		}
	})
	var got []time.Time
	c := startYamux(t, newTestServer(agentserver.ServerOptions{SetClock: func(t time.Time) error {
		got = append(got, t)
		return nil
	}}))
	want := time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.UTC)
	if err := c.SetClock(testCtx(t, 10*time.Second), want); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got[0].Equal(want) {
		t.Fatalf("clock set to %v, want [%v]", got, want)
	}
	// A host (or anything on the channel) sending an absurd time is refused
	// before the guest's clock is touched.
	for _, bad := range []time.Time{time.Unix(0, 0), time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC)} {
		err := c.SetClock(testCtx(t, 10*time.Second), bad)
		if !errors.Is(err, &agentproto.Error{Code: agentproto.CodeBadRequest}) || !strings.Contains(err.Error(), "outside") {
			t.Fatalf("SetClock(%v) = %v, want bad_request naming the range", bad, err)
		}
	}
	if len(got) != 1 {
		t.Fatalf("clock set %d times, want 1 (the bad times agenttest.Must not reach SetClock)", len(got))
	}
}
