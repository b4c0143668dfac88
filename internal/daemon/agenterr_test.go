package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentclient"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentserver"
	"github.com/bangerdev/banger/internal/rpc"
)

// agentOverUnix runs a real agent server on a unix socket (the transport
// the guest serves on, minus the VM) and returns the daemon's client of it.
func agentOverUnix(t *testing.T) *guestAgent {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := agentserver.NewServer(agentserver.ServerOptions{BootID: "boot-1", Version: "test"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("agent server did not stop")
		}
	})
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}
	return &guestAgent{Client: agentclient.NewClient(dial, nil), close: func() error { return nil }}
}

// The agent's own codes are translated: copying a missing guest path out
// answers not_found (in-process and on the wire), and nothing is created on
// the host side.
func TestGuestCopyOfMissingPathIsNotFound(t *testing.T) {
	ga := agentOverUnix(t)
	ctx := context.Background()
	guestDir := t.TempDir()
	missing := filepath.Join(guestDir, "no-such-file")
	local := filepath.Join(t.TempDir(), "dest")

	err := guestCopy(ctx, ga, "vm1", api.VMCopy{Direction: api.CopyOut, Guest: missing, Local: local}, agentproto.CopyLimits{})
	if got := api.CodeOf(err); got != api.CodeNotFound {
		t.Fatalf("copy out of a missing guest path: code %s, want %s (err: %v)", got, api.CodeNotFound, err)
	}
	if !errors.Is(err, agentproto.ErrNotFound) {
		t.Fatalf("errors.Is(err, agentproto.ErrNotFound) is false: %v", err)
	}
	if _, serr := os.Lstat(local); !errors.Is(serr, os.ErrNotExist) {
		t.Fatalf("failed copy out left %s behind (%v)", local, serr)
	}

	// Over the daemon's wire the CLI gets the same code.
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ms := rpc.NewMethods()
	rpc.Register(ms, api.MethodVMCopy, func(ctx context.Context, c *rpc.Call, p api.VMCopy) (api.Empty, error) {
		return api.Empty{}, guestCopy(ctx, ga, p.Name, p, agentproto.CopyLimits{})
	})
	srv := rpc.NewServer(ms, rpc.ServerOptions{Logger: slog.New(slog.DiscardHandler)})
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln) }()
	defer func() { cancel(); <-served }()
	_, err = rpc.Invoke(ctx, rpc.NewClient(sock), api.MethodVMCopy, api.VMCopy{Name: "vm1", Direction: api.CopyOut, Guest: missing, Local: local})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeNotFound {
		t.Fatalf("wire error = %#v, want not_found", err)
	}
}

// Each agent code has its wire code; the agent client's own failures too.
func TestAgentErrorVocabulary(t *testing.T) {
	ga := agentOverUnix(t)
	ctx := context.Background()
	// A relative guest path is refused by the agent as bad_request.
	err := guestCopy(ctx, ga, "vm1", api.VMCopy{Direction: api.CopyOut, Guest: "relative/path", Local: t.TempDir()}, agentproto.CopyLimits{})
	if got := api.CodeOf(err); got != api.CodeInvalidArgument {
		t.Fatalf("copy out of a relative guest path: code %s, want %s (err: %v)", got, api.CodeInvalidArgument, err)
	}
	_, err = ga.Exec(ctx, agentproto.ExecRequest{Argv: []string{"definitely-not-a-command-xyz"}}, nil, nil, nil, nil, nil)
	if got := api.CodeOf(agentError(err)); got != api.CodeNotFound {
		t.Fatalf("exec of a missing command: code %s, want %s (err: %v)", got, api.CodeNotFound, err)
	}
	_, err = ga.Exec(ctx, agentproto.ExecRequest{}, nil, nil, nil, nil, nil)
	if got := api.CodeOf(agentError(err)); got != api.CodeInvalidArgument {
		t.Fatalf("exec without argv: code %s, want %s (err: %v)", got, api.CodeInvalidArgument, err)
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&agentproto.Error{Code: agentproto.CodeUnknownMethod, Message: "unknown method"}, api.CodeUnimplemented},
		{&agentproto.Error{Code: agentproto.CodeUnsupported, Message: "no poweroff"}, api.CodeUnimplemented},
		{&agentproto.Error{Code: agentproto.CodeDialFailed, Message: "dial 127.0.0.1:1: refused"}, api.CodeUnavailable},
		{&agentproto.Error{Code: agentproto.CodeExecFailed, Message: "start: permission denied"}, api.CodeFailedPrecondition},
		{&agentproto.Error{Code: agentproto.CodeIO, Message: "disk full"}, api.CodeInternal},
		{agentproto.ErrConnectionLost, api.CodeUnavailable},
		{fmt.Errorf("extract: %w: etc/../../x", agentproto.ErrUnsafePath), api.CodePermissionDenied},
		{fmt.Errorf("extract: %w: dev/sda", agentproto.ErrUnsafeEntry), api.CodePermissionDenied},
		{fmt.Errorf("extract: %w: 2 GiB", agentproto.ErrArchiveLimit), api.CodeFailedPrecondition},
		{context.Canceled, api.CodeCanceled},
		{errors.New("something else"), api.CodeInternal},
	} {
		if got := api.CodeOf(agentError(tc.err)); got != tc.want {
			t.Errorf("agentError(%v): code %s, want %s", tc.err, got, tc.want)
		}
		if !errors.Is(agentError(tc.err), tc.err) {
			t.Errorf("agentError(%v) lost the cause", tc.err)
		}
	}
	if agentError(nil) != nil {
		t.Error("agentError(nil) is not nil")
	}
}
