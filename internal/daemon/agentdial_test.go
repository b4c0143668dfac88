package daemon

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentserver"
	"github.com/bangerdev/banger/internal/vmm"
)

// hybridListener plays Firecracker's side of a hybrid vsock socket: each
// connection must start with "CONNECT <port>\n", answered "OK <n>\n".
type hybridListener struct {
	net.Listener
	port uint32
}

func (l hybridListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReaderSize(&oneByte{c}, 16).ReadString('\n')
		if err != nil || line != fmt.Sprintf("CONNECT %d\n", l.port) {
			c.Close()
			continue
		}
		if _, err := io.WriteString(c, "OK 1073741824\n"); err != nil {
			c.Close()
			continue
		}
		_ = c.SetDeadline(time.Time{})
		return c, nil
	}
}

// oneByte reads one byte at a time, so the buffered reader above takes
// nothing past the CONNECT line.
type oneByte struct{ r io.Reader }

func (o *oneByte) Read(p []byte) (int, error) { return o.r.Read(p[:1]) }

// serveAgent runs a real agent server behind the endpoint kind's host side
// and returns the endpoint.
func serveAgent(t *testing.T, kind vmm.AgentKind) vmm.AgentEndpoint {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := agentserver.NewServer(agentserver.ServerOptions{BootID: "boot-" + string(kind), Version: "test"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ep := vmm.AgentEndpoint{Kind: kind, SocketPath: sock}
	switch kind {
	case vmm.AgentHybridVsock:
		ep.Port = 1024
		go func() { done <- srv.Serve(ctx, hybridListener{ln, ep.Port}) }()
	case vmm.AgentVirtioSerialYamux:
		// The socket is QEMU's side of the virtio-serial port: one
		// connection, multiplexed.
		go func() {
			done <- srv.ServePort(ctx, func() (io.ReadWriteCloser, error) { return ln.Accept() })
		}()
		context.AfterFunc(ctx, func() { ln.Close() })
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("agent server did not stop")
		}
	})
	return ep
}

// Every endpoint kind the drivers hand out reaches a real agent through its
// own dialer; any other kind (the removed vhost-vsock, none, a future one)
// is refused with an error naming it, and no client is made.
func TestDialAgentEndpointKinds(t *testing.T) {
	lg := slog.New(slog.DiscardHandler)
	for _, kind := range []vmm.AgentKind{vmm.AgentVirtioSerialYamux, vmm.AgentHybridVsock} {
		t.Run(string(kind), func(t *testing.T) {
			ep := serveAgent(t, kind)
			ga, err := dialAgentEndpoint(ep, lg, nil)
			if err != nil {
				t.Fatalf("dial %s: %v", kind, err)
			}
			defer ga.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			bootID, err := ga.Health(ctx)
			if err != nil || bootID != "boot-"+string(kind) {
				t.Fatalf("health over %s: %q, %v", kind, bootID, err)
			}
		})
	}
	for name, ep := range map[string]vmm.AgentEndpoint{
		"vhost-vsock":      {Kind: "vhost-vsock", CID: 3, Port: 1024},
		"empty":            {SocketPath: "/nonexistent/agent.sock"},
		"future":           {Kind: "virtio-serial-quic", SocketPath: "/nonexistent/agent.sock"},
		"yamux no socket":  {Kind: vmm.AgentVirtioSerialYamux},
		"hybrid no port":   {Kind: vmm.AgentHybridVsock, SocketPath: "/nonexistent/v.sock"},
		"hybrid no socket": {Kind: vmm.AgentHybridVsock, Port: 1024},
	} {
		t.Run(name, func(t *testing.T) {
			ga, err := dialAgentEndpoint(ep, lg, nil)
			if err == nil || ga != nil {
				t.Fatalf("dial %+v: client %v, err %v; want a refusal", ep, ga, err)
			}
			if want := fmt.Sprintf("%q", ep.Kind); ep.Kind != vmm.AgentVirtioSerialYamux && ep.Kind != vmm.AgentHybridVsock && !strings.Contains(err.Error(), "unknown agent transport "+want) {
				t.Errorf("error %q does not name the transport %s", err, want)
			}
		})
	}
}
