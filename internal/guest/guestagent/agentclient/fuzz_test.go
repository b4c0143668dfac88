package agentclient

import (
	"github.com/bangerdev/banger/internal/guest/guestagent/agenttest"

	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
)

// checkUntrustedErr fails t if err carries an agent Error that is not safe to log
// and print: its code must be a short lower-case token and its message
// bounded and free of control and bidi-override characters.
func checkUntrustedErr(t *testing.T, err error) {
	t.Helper()
	var ae *agentproto.Error
	if !errors.As(err, &ae) {
		return
	}
	if ae.Code == "" || len(ae.Code) > 32 || strings.Trim(ae.Code, "abcdefghijklmnopqrstuvwxyz_") != "" {
		t.Fatalf("untamed error code %q", ae.Code)
	}
	if len(ae.Message) > agentproto.MaxErrorMessage+len("…") || !utf8.ValidString(ae.Message) {
		t.Fatalf("untamed error message of %d bytes", len(ae.Message))
	}
	for _, r := range ae.Message {
		if unicode.IsControl(r) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			t.Fatalf("error message carries %U", r)
		}
	}
}

// FuzzAgentReply plays a hostile agent: whatever request the host sends,
// it answers with the fuzzed bytes (response line and frames) and hangs
// up. For each client method that reads a reply: no panic, an answer or an
// error within the deadline, agent errors tamed, and no more output than
// the agent sent.
func FuzzAgentReply(f *testing.F) {
	frame := func(t byte, p []byte) []byte {
		b := []byte{t, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], uint32(len(p)))
		return append(b, p...)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	ok := []byte("{}\n")
	f.Add([]byte(`{"result":{"version":"1","hostname":"g"}}` + "\n"))
	f.Add([]byte(`{"result":[{"proto":"tcp","port":22,"process":"sshd"}]}` + "\n"))
	f.Add(cat(ok, frame(agentproto.FrameStdout, []byte("hi")), frame(agentproto.FrameStderr, []byte("err")), frame(agentproto.FrameExit, []byte{0, 0, 0, 3})))
	f.Add(cat(ok, frame(agentproto.FrameExit, []byte{1})))
	f.Add(cat(ok, []byte{agentproto.FrameStdout, 0xff, 0xff, 0xff, 0xff}))
	f.Add(cat(ok, frame(agentproto.FrameError, []byte(`{"code":"Evil\u001b[2J","message":"\u202eplh`+strings.Repeat("x", 5000)+`"}`))))
	f.Add(cat(ok, frame(agentproto.FrameError, []byte(`not json`))))
	f.Add([]byte(`{"error":{"code":"io","message":"line1\nline2\u0007"}}` + "\n"))
	f.Add([]byte(strings.Repeat("x", 70000)))
	f.Add(cat(ok, frame(agentproto.FrameData, agenttest.TarOf(f, agenttest.Reg("x", 0o644))), frame(agentproto.FrameEOF, nil)))
	f.Fuzz(func(t *testing.T, reply []byte) {
		defer agenttest.Watchdog(30 * time.Second)()
		dial := func(ctx context.Context) (net.Conn, error) {
			host, guest := net.Pipe()
			go func() {
				defer guest.Close()
				br := bufio.NewReader(guest)
				if _, err := br.ReadString('\n'); err != nil {
					return
				}
				go func() { _, _ = io.Copy(io.Discard, br) }() // stdin frames, never blocking the host
				_, _ = guest.Write(reply)
			}()
			return host, nil
		}
		c := NewClient(dial, testLogger())
		run := func(name string, fn func(ctx context.Context) error) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- fn(ctx) }()
			select {
			case err := <-done:
				checkUntrustedErr(t, err)
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: no answer 3s past its deadline", name)
			}
		}
		run("health", func(ctx context.Context) error { _, err := c.Health(ctx); return err })
		run("ports", func(ctx context.Context) error { _, err := c.Ports(ctx); return err })
		run("exec", func(ctx context.Context) error {
			var out, errb bytes.Buffer
			_, err := c.Exec(ctx, agentproto.ExecRequest{Argv: []string{"true"}}, nil, &out, &errb, nil, nil)
			if out.Len()+errb.Len() > len(reply) {
				t.Fatalf("exec wrote %d bytes of output from a %d-byte reply", out.Len()+errb.Len(), len(reply))
			}
			return err
		})
		run("copy_out", func(ctx context.Context) error {
			var out bytes.Buffer
			err := c.CopyOut(ctx, "/x", &out)
			if out.Len() > len(reply) {
				t.Fatalf("copy_out wrote %d bytes from a %d-byte reply", out.Len(), len(reply))
			}
			return err
		})
	})
}

// FuzzHostHandshake plays a hostile guest during the host's handshake: it
// reads the HELLO and answers with the fuzzed bytes, "@" standing for the
// host's nonce. No panic; an answer within the deadline; success only if
// the guest sent READY with that nonce, and the bytes handed on are
// exactly what followed it.
func FuzzHostHandshake(f *testing.F) {
	f.Add([]byte(agentproto.ReadyPrefix + "@\nyamux bytes"))
	f.Add([]byte("garbage\x00\xff" + agentproto.ReadyPrefix + "@\n"))
	f.Add([]byte(agentproto.ReadyPrefix + "wrong\n" + agentproto.ReadyPrefix + "@@\n"))
	f.Add([]byte(agentproto.ReadyPrefix + "@"))
	f.Add([]byte(strings.Repeat("A", 9000) + agentproto.ReadyPrefix + "@\n"))
	f.Fuzz(func(t *testing.T, script []byte) {
		defer agenttest.Watchdog(10 * time.Second)()
		host, guest := net.Pipe()
		defer host.Close()
		sent := make(chan []byte, 1)
		go func() {
			defer guest.Close()
			br := bufio.NewReader(guest)
			hello, err := br.ReadString('\n')
			nonce, ok := strings.CutPrefix(strings.TrimSuffix(hello, "\n"), agentproto.HelloPrefix)
			if err != nil || !ok {
				sent <- nil
				return
			}
			go func() { _, _ = io.Copy(io.Discard, br) }() // repeated HELLOs, START
			b := bytes.ReplaceAll(script, []byte("@"), []byte(nonce))
			sent <- append([]byte(nonce+"\n"), b...)
			_, _ = guest.Write(b)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		rest, err := hostHandshake(ctx, host)
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("handshake took %s with a 1s deadline", d)
		}
		got := <-sent
		if err != nil {
			if !errors.Is(err, agentproto.ErrHandshake) {
				t.Fatalf("handshake error %v is not ErrHandshake", err)
			}
			return
		}
		if got == nil {
			t.Fatal("handshake succeeded without a HELLO reaching the guest")
		}
		nonce, stream, _ := bytes.Cut(got, []byte("\n"))
		want := []byte(agentproto.ReadyPrefix + string(nonce) + "\n")
		i := bytes.Index(stream, want)
		if i < 0 {
			t.Fatalf("handshake succeeded though the guest never sent READY %s", nonce)
		}
		left, _ := io.ReadAll(rest)
		if !bytes.HasPrefix(stream[i+len(want):], left) {
			t.Fatalf("handed on %q, which is not what followed READY", left)
		}
	})
}
