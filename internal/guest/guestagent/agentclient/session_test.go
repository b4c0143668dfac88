package agentclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentserver"
)

func sessionByID(t *testing.T, c *Client, id string) agentproto.SessionInfo {
	t.Helper()
	list, err := c.Sessions(context.Background())
	if err != nil {
		t.Fatalf("list sessions: %v", err)
	}
	for _, si := range list {
		if si.ID == id {
			return si
		}
	}
	t.Fatalf("session %s not listed in %+v", id, list)
	return agentproto.SessionInfo{}
}

func TestSessionOutlivesItsClients(t *testing.T) {
	// yamux: a host that goes away and comes back (the daemon restarting)
	// reaches the same agent, hence the same sessions.
	srv := newTestServer(agentserver.ServerOptions{KillGrace: 200 * time.Millisecond})
	ch := newFakeChardev(t, true)
	runInBackground(t, func(ctx context.Context) error { return srv.ServePort(ctx, ch.open) })
	dial := NewYamuxDialer(ch.sock, testLogger())
	c := NewClient(dial.Dial, testLogger())
	ctx := context.Background()

	started, err := c.StartSession(ctx, agentproto.SessionStart{ExecRequest: agentproto.ExecRequest{
		Argv: []string{"sh", "-c", `i=0; while [ $i -lt 150 ]; do i=$((i+1)); echo "line $i"; sleep 0.02; done; exit 7`}}})
	if err != nil {
		t.Fatalf("start session: %v", err)
	}
	if !agentproto.ValidSessionID(started.ID) {
		t.Fatalf("session id %q", started.ID)
	}

	// First client: reads a few lines, then goes away (detach).
	var out1 syncBuffer
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := c.Attach(actx, started.ID, AttachIO{Stdout: &out1})
		done <- err
	}()
	waitFor(t, 15*time.Second, "line 5 on the first client", func() bool { return strings.Contains(out1.String(), "line 5\n") })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("detached attach returned %v", err)
	}
	if si := sessionByID(t, c, started.ID); si.State != agentproto.SessionRunning {
		t.Fatalf("session after detach: %+v", si)
	}

	// The host restarts: a new dialer and client, as a new daemon has.
	if err := dial.Close(); err != nil {
		t.Fatal(err)
	}
	dial2 := NewYamuxDialer(ch.sock, testLogger())
	t.Cleanup(func() { _ = dial2.Close() })
	c2 := NewClient(dial2.Dial, testLogger())
	var out2 syncBuffer
	var attached agentproto.SessionAttached
	code, err := c2.Attach(ctx, started.ID, AttachIO{Stdout: &out2, Attached: func(a agentproto.SessionAttached) { attached = a }})
	if err != nil {
		t.Fatalf("attach after restart: %v", err)
	}
	if code != 7 || attached.ID != started.ID || attached.TTY {
		t.Fatalf("exit %d attached %+v", code, attached)
	}
	var want strings.Builder
	for i := 1; i <= 150; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if out2.String() != want.String() {
		t.Fatalf("second client got %q, want every line from the first", out2.String())
	}
	si := sessionByID(t, c2, started.ID)
	if si.State != agentproto.SessionExited || si.ExitCode == nil || *si.ExitCode != 7 || si.EndedAt == nil || si.Clients != 0 {
		t.Fatalf("finished session listed as %+v", si)
	}
	// A finished session still replays, then reports its exit at once.
	var out3 syncBuffer
	if code, err := c2.Attach(ctx, started.ID, AttachIO{Stdout: &out3}); err != nil || code != 7 || out3.String() != want.String() {
		t.Fatalf("attach to finished session: code %d err %v, %d bytes", code, err, len(out3.String()))
	}
}

func TestSessionReplayIsBounded(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			c := tr.start(t, newTestServer(agentserver.ServerOptions{}))
			ctx := context.Background()
			const ring = 4096
			started, err := c.StartSession(ctx, agentproto.SessionStart{ReplayBytes: ring, ExecRequest: agentproto.ExecRequest{
				Argv: []string{"sh", "-c", `head -c 2000000 /dev/zero | tr '\0' x; echo; echo the-end; sleep 0.5; echo oops >&2`}}})
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, 15*time.Second, "the session to end", func() bool { return sessionByID(t, c, started.ID).State == agentproto.SessionExited })
			var out, errOut syncBuffer
			code, err := c.Attach(ctx, started.ID, AttachIO{Stdout: &out, Stderr: &errOut})
			if err != nil || code != 0 {
				t.Fatalf("attach: %d %v", code, err)
			}
			if n := len(out.String()) + len(errOut.String()); n > ring {
				t.Fatalf("replayed %d bytes, ring is %d", n, ring)
			}
			if !strings.HasSuffix(out.String(), "x\nthe-end\n") || errOut.String() != "oops\n" {
				t.Fatalf("replay tail %q, stderr %q", out.String()[max(0, len(out.String())-20):], errOut.String())
			}
			if si := sessionByID(t, c, started.ID); si.OutputBytes != 2000000+1+8+5 {
				t.Fatalf("output bytes %d", si.OutputBytes)
			}
		})
	}
}

func TestSessionStdinSignalsAndTTY(t *testing.T) {
	c := startUnix(t, newTestServer(agentserver.ServerOptions{}))
	ctx := context.Background()

	// Pipes with stdin kept open: what one client types reaches the process,
	// its end of input closes it.
	s1, err := c.StartSession(ctx, agentproto.SessionStart{Stdin: true, ExecRequest: agentproto.ExecRequest{Argv: []string{"cat"}}})
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	code, err := c.Attach(ctx, s1.ID, AttachIO{Stdin: strings.NewReader("hello session\n"), Stdout: &out})
	if err != nil || code != 0 || out.String() != "hello session\n" {
		t.Fatalf("cat session: %d %v %q", code, err, out.String())
	}

	// A client whose stdin fails (it went away) detaches without closing
	// the session's stdin: the next client still types into it.
	s1b, err := c.StartSession(ctx, agentproto.SessionStart{Stdin: true, ExecRequest: agentproto.ExecRequest{Argv: []string{"cat"}}})
	if err != nil {
		t.Fatal(err)
	}
	var outB syncBuffer
	actx, cancel := context.WithCancel(ctx)
	first := make(chan error, 1)
	go func() {
		_, err := c.Attach(actx, s1b.ID, AttachIO{Stdin: io.MultiReader(strings.NewReader("one "), failingReader{}), Stdout: &outB})
		first <- err
	}()
	waitFor(t, 15*time.Second, "the first client's input echoed", func() bool { return outB.String() == "one " })
	cancel()
	<-first
	var outC syncBuffer
	code, err = c.Attach(ctx, s1b.ID, AttachIO{Stdin: strings.NewReader("two\n"), Stdout: &outC})
	if err != nil || code != 0 || outC.String() != "one two\n" {
		t.Fatalf("second client: %d %v %q", code, err, outC.String())
	}

	// Without Stdin the process starts at end of input.
	s2, err := c.StartSession(ctx, agentproto.SessionStart{ExecRequest: agentproto.ExecRequest{Argv: []string{"cat"}}})
	if err != nil {
		t.Fatal(err)
	}
	if code, err := c.Attach(ctx, s2.ID, AttachIO{}); err != nil || code != 0 {
		t.Fatalf("cat without stdin: %d %v", code, err)
	}

	// A tty session: output through the pty, and a signal from a client
	// reaches it.
	s3, err := c.StartSession(ctx, agentproto.SessionStart{ExecRequest: agentproto.ExecRequest{TTY: true,
		Argv: []string{"sh", "-c", `tty >/dev/null && echo is-a-tty; trap 'echo got-int; exit 4' INT; while :; do sleep 0.05; done`}}})
	if err != nil {
		t.Fatal(err)
	}
	var tout syncBuffer
	sigs := make(chan os.Signal, 1)
	var attached agentproto.SessionAttached
	doneCh := make(chan struct{})
	var tcode int
	var terr error
	go func() {
		defer close(doneCh)
		tcode, terr = c.Attach(ctx, s3.ID, AttachIO{Stdout: &tout, Signals: sigs, Attached: func(a agentproto.SessionAttached) { attached = a }})
	}()
	waitFor(t, 15*time.Second, "the tty session's first line", func() bool { return strings.Contains(tout.String(), "is-a-tty") })
	sigs <- syscall.SIGINT
	select {
	case <-doneCh:
	case <-time.After(15 * time.Second):
		t.Fatal("tty session did not end on SIGINT")
	}
	if terr != nil || tcode != 4 || !attached.TTY || !strings.Contains(tout.String(), "got-int") {
		t.Fatalf("tty session: code %d err %v attached %+v out %q", tcode, terr, attached, tout.String())
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("client gone") }

func TestSessionIDCarriesTheMode(t *testing.T) {
	for range 200 {
		for _, tty := range []bool{false, true} {
			id, err := agentproto.NewSessionID(tty)
			if err != nil || !agentproto.ValidSessionID(id) || agentproto.SessionIDTTY(id) != tty {
				t.Fatalf("NewSessionID(%v) = %q, %v", tty, id, err)
			}
		}
	}
}

func TestSessionBadRequests(t *testing.T) {
	c := startUnix(t, newTestServer(agentserver.ServerOptions{}))
	ctx := context.Background()
	if _, err := c.StartSession(ctx, agentproto.SessionStart{ReplayBytes: agentproto.MaxReplayBytes + 1, ExecRequest: agentproto.ExecRequest{Argv: []string{"true"}}}); !errors.Is(err, &agentproto.Error{Code: agentproto.CodeBadRequest}) {
		t.Fatalf("oversized ring: %v", err)
	}
	if _, err := c.StartSession(ctx, agentproto.SessionStart{ExecRequest: agentproto.ExecRequest{Argv: []string{"no-such-command-here"}}}); !errors.Is(err, &agentproto.Error{Code: agentproto.CodeNotFound}) {
		t.Fatalf("missing command: %v", err)
	}
	if _, err := c.Attach(ctx, "0123456789abcdef", AttachIO{}); !errors.Is(err, &agentproto.Error{Code: agentproto.CodeNotFound}) {
		t.Fatalf("unknown session: %v", err)
	}
	if _, err := c.Attach(ctx, "../../etc", AttachIO{}); err == nil {
		t.Fatal("malformed id accepted")
	}
	// The host's id must carry the session's mode and be unused.
	ttyID, _ := agentproto.NewSessionID(true)
	if _, err := c.StartSession(ctx, agentproto.SessionStart{ID: ttyID, ExecRequest: agentproto.ExecRequest{Argv: []string{"true"}}}); !errors.Is(err, &agentproto.Error{Code: agentproto.CodeBadRequest}) {
		t.Fatalf("tty id for a pipes session: %v", err)
	}
	pipesID, _ := agentproto.NewSessionID(false)
	if _, err := c.StartSession(ctx, agentproto.SessionStart{ID: pipesID, ExecRequest: agentproto.ExecRequest{Argv: []string{"true"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StartSession(ctx, agentproto.SessionStart{ID: pipesID, ExecRequest: agentproto.ExecRequest{Argv: []string{"true"}}}); !errors.Is(err, &agentproto.Error{Code: agentproto.CodeBadRequest}) {
		t.Fatalf("id in use: %v", err)
	}
	list, err := c.Sessions(ctx)
	if err != nil || len(list) != 1 || list[0].ID != pipesID {
		t.Fatalf("failed starts left sessions behind: %+v %v", list, err)
	}
}

func TestSessionTableIsBounded(t *testing.T) {
	c := startUnix(t, newTestServer(agentserver.ServerOptions{}))
	ctx := context.Background()
	var first string
	for i := range agentproto.MaxSessions {
		s, err := c.StartSession(ctx, agentproto.SessionStart{ExecRequest: agentproto.ExecRequest{Argv: []string{"sleep", "30"}}})
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		if i == 0 {
			first = s.ID
		}
	}
	if _, err := c.StartSession(ctx, agentproto.SessionStart{ExecRequest: agentproto.ExecRequest{Argv: []string{"true"}}}); !errors.Is(err, &agentproto.Error{Code: agentproto.CodeExecFailed}) {
		t.Fatalf("start beyond %d running sessions: %v", agentproto.MaxSessions, err)
	}
	// Once one has ended, it makes room for a new one.
	kill := make(chan os.Signal, 1)
	kill <- syscall.SIGKILL
	if code, err := c.Attach(ctx, first, AttachIO{Signals: kill}); err != nil || code != 128+9 {
		t.Fatalf("kill first session: %d %v", code, err)
	}
	if _, err := c.StartSession(ctx, agentproto.SessionStart{ExecRequest: agentproto.ExecRequest{Argv: []string{"true"}}}); err != nil {
		t.Fatalf("start after one ended: %v", err)
	}
	list, _ := c.Sessions(ctx)
	for _, si := range list {
		if si.ID == first {
			t.Fatal("the finished session was not the one dropped")
		}
	}
	for _, si := range list { // bounded clean-up: the test's processes
		if si.State == agentproto.SessionRunning {
			k := make(chan os.Signal, 1)
			k <- syscall.SIGKILL
			_, _ = c.Attach(ctx, si.ID, AttachIO{Signals: k})
		}
	}
}

// A hostile guest's session answers are refused before anything uses them.
func TestSessionRepliesFromHostileAgent(t *testing.T) {
	cases := map[string]any{
		"bad id":         []map[string]any{{"id": "../x", "argv": []string{"sh"}, "state": "running"}},
		"unknown state":  []map[string]any{{"id": "0123456789abcdef", "argv": []string{"sh"}, "state": "\x1b[2J"}},
		"exit w/o state": []map[string]any{{"id": "0123456789abcdef", "argv": []string{"sh"}, "state": "running", "exit_code": 1}},
		"too many":       manySessions(agentproto.MaxSessions + 1),
	}
	for name, reply := range cases {
		t.Run(name, func(t *testing.T) {
			c := scriptedAgent(t, func(st *agentproto.Stream, method string) {
				b, _ := json.Marshal(reply)
				_ = st.WriteLine(agentproto.Response{Result: b})
			})
			if list, err := c.Sessions(context.Background()); err == nil {
				t.Fatalf("accepted %+v", list)
			}
		})
	}
	t.Run("attach answers another session", func(t *testing.T) {
		c := scriptedAgent(t, func(st *agentproto.Stream, method string) {
			_ = agentserver.Respond(st, agentproto.SessionAttached{ID: "ffffffffffffffff"})
			_ = st.WriteFrame(agentproto.FrameStdout, []byte("not yours"))
		})
		var out syncBuffer
		if _, err := c.Attach(context.Background(), "0123456789abcdef", AttachIO{Stdout: &out}); err == nil || out.String() != "" {
			t.Fatalf("attach to a swapped session: %v, output %q", err, out.String())
		}
	})
	t.Run("attach claims a tty for a pipes session", func(t *testing.T) {
		pipes, _ := agentproto.NewSessionID(false)
		c := scriptedAgent(t, func(st *agentproto.Stream, method string) {
			_ = agentserver.Respond(st, agentproto.SessionAttached{ID: pipes, TTY: true})
			_ = st.WriteFrame(agentproto.FrameStdout, []byte("\x1b]52;c;ZXZpbA==\x07"))
		})
		var out syncBuffer
		var attached bool
		_, err := c.Attach(context.Background(), pipes, AttachIO{Stdout: &out, Attached: func(agentproto.SessionAttached) { attached = true }})
		if err == nil || attached || out.String() != "" {
			t.Fatalf("a guest upgraded a pipes session to a tty: err %v, attached %v, output %q", err, attached, out.String())
		}
	})
	t.Run("listed tty flag contradicts the id", func(t *testing.T) {
		pipes, _ := agentproto.NewSessionID(false)
		c := scriptedAgent(t, func(st *agentproto.Stream, method string) {
			_ = agentserver.Respond(st, []agentproto.SessionInfo{{ID: pipes, Argv: []string{"sh"}, TTY: true, State: agentproto.SessionRunning}})
		})
		if list, err := c.Sessions(context.Background()); err == nil {
			t.Fatalf("accepted %+v", list)
		}
	})
	t.Run("start answers a bad id", func(t *testing.T) {
		c := scriptedAgent(t, func(st *agentproto.Stream, method string) {
			_ = agentserver.Respond(st, agentproto.SessionStarted{ID: "x\ny", PID: 5})
		})
		if _, err := c.StartSession(context.Background(), agentproto.SessionStart{ExecRequest: agentproto.ExecRequest{Argv: []string{"sh"}}}); err == nil {
			t.Fatal("accepted a malformed session id")
		}
	})
}

func manySessions(n int) []map[string]any {
	out := make([]map[string]any, n)
	for i := range out {
		out[i] = map[string]any{"id": fmt.Sprintf("%016x", i), "argv": []string{"sh"}, "state": "running"}
	}
	return out
}
