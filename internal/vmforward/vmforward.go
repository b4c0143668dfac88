// Package vmforward carries one local TCP connection to a guest port over
// the daemon's vm.forward call: the client side shared by `banger vm
// forward` and `banger mcp`.
package vmforward

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
)

// Conn carries conn over one vm.forward call until either side closes, and
// closes conn. Local bytes go up as data frames; the local side's EOF
// half-closes the guest side.
func Conn(ctx context.Context, c *rpc.Client, conn net.Conn, p api.VMForward) error {
	defer conn.Close()
	s, err := rpc.OpenStream(ctx, c, api.MethodVMForward, p)
	if err != nil {
		return err
	}
	defer s.Close()
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			if n > 0 && s.Send(api.KindBytes, buf[:n]) != nil {
				return
			}
			if err != nil {
				_ = s.CloseSend() // half-close: the guest side sees EOF
				return
			}
		}
	}()
	for {
		f, err := s.Next()
		if err != nil {
			return err
		}
		switch f.Type {
		case rpc.FrameResult:
			return nil // the guest side closed
		case rpc.FrameData:
			var b []byte
			if err := json.Unmarshal(f.Payload, &b); err != nil {
				return fmt.Errorf("decode forwarded data: %w", err)
			}
			if _, err := conn.Write(b); err != nil {
				if errors.Is(err, net.ErrClosed) {
					return nil
				}
				return fmt.Errorf("write to local connection: %w", err)
			}
		}
	}
}
