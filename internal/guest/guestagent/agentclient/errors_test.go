package agentclient

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
)

// erroringAgent answers every request with the given error, as a guest that
// controls the agent could: a response line for unary calls, or an accepted
// Response followed by an error frame.
func erroringAgent(t *testing.T, e agentproto.Error, asFrame bool) Dialer {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for range 8 { // bounded: the tests make a few calls
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
					return
				}
				st := agentproto.NewStream(c)
				if !asFrame {
					_ = st.WriteLine(map[string]any{"error": e})
					return
				}
				_ = st.WriteLine(agentproto.Response{Result: json.RawMessage(`{}`)})
				_ = st.WriteJSONFrame(agentproto.FrameError, e)
			}()
		}
	}()
	return unixDialer(sock)
}

func checkTame(t *testing.T, err error, wantCode string) {
	t.Helper()
	var ae *agentproto.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %T %v carries no agent error", err, err)
	}
	if ae.Code != wantCode {
		t.Errorf("code = %q, want %q", ae.Code, wantCode)
	}
	if len(ae.Message) > agentproto.MaxErrorMessage+len("…") {
		t.Errorf("message of %d bytes passed through (max %d)", len(ae.Message), agentproto.MaxErrorMessage)
	}
	for _, r := range err.Error() {
		if unicode.IsControl(r) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			t.Fatalf("control or bidi character %U from the guest survived: %q", r, err.Error())
		}
	}
}

// Error text from the guest is hostile: terminal escapes, bidi overrides
// and a huge message are tamed at the client, before the daemon logs it,
// stores it or hands it to the CLI's terminal. The code survives when it is
// a plain token; anything else becomes internal.
func TestGuestErrorTextIsTamed(t *testing.T) {
	evil := "gone\x1b]0;owned\x07\x1b[2J\r\nfake prompt$ \u202eexe.txt" + strings.Repeat("A", 100_000)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	c := NewClient(erroringAgent(t, agentproto.Error{Code: agentproto.CodeNotFound, Message: evil}, false), nil)
	_, err := c.Health(ctx)
	checkTame(t, err, agentproto.CodeNotFound)
	if !errors.Is(err, agentproto.ErrNotFound) {
		t.Errorf("errors.Is(err, ErrNotFound) is false: %v", err)
	}

	c = NewClient(erroringAgent(t, agentproto.Error{Code: agentproto.CodeNotFound, Message: evil}, true), nil)
	err = c.CopyOut(ctx, "/x", &strings.Builder{})
	checkTame(t, err, agentproto.CodeNotFound)

	c = NewClient(erroringAgent(t, agentproto.Error{Code: "not_found\x1b[31m", Message: "x"}, false), nil)
	_, err = c.Health(ctx)
	checkTame(t, err, agentproto.CodeInternal)
}
