package agentclient

import (
	"github.com/bangerdev/banger/internal/guest/guestagent/agenttest"

	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentserver"
)

// TestHybridVsockOver: the handshake runs over connections from the given
// dialer (the root helper's, for a jail), and a dial failure is returned.
func TestHybridVsockOver(t *testing.T) {
	agentSock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", agentSock)
	agenttest.Must(t, err)
	runInBackground(t, func(ctx context.Context) error { return newTestServer(agentserver.ServerOptions{}).Serve(ctx, ln) })
	fc := fakeFirecracker(t, agentSock, func(port uint64) string { return "OK 1\n" })
	dials := 0
	c := NewClient(HybridVsockOver(func(ctx context.Context) (net.Conn, error) {
		dials++
		var d net.Dialer
		return d.DialContext(ctx, "unix", fc)
	}, agentproto.DefaultVsockPort), testLogger())
	healthy(t, c, "hybrid vsock over a passed connection")
	if dials == 0 {
		t.Fatal("the given dialer was not used")
	}
	refused := errors.New("helper refused")
	bad := NewClient(HybridVsockOver(func(context.Context) (net.Conn, error) { return nil, refused }, agentproto.DefaultVsockPort), testLogger())
	if _, err := bad.Health(testCtx(t, 10*time.Second)); !errors.Is(err, refused) {
		t.Fatalf("dial failure: %v", err)
	}
}
