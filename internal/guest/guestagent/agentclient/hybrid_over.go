package agentclient

import (
	"context"
	"fmt"
	"net"
)

// HybridVsockOver is HybridVsockDialer over connections from dial, for a
// Firecracker vsock socket the caller cannot open by path (a jail the root
// helper opens for it).
func HybridVsockOver(dial func(context.Context) (net.Conn, error), port uint32) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		conn, err := dial(ctx)
		if err != nil {
			return nil, fmt.Errorf("connect to vsock socket: %w", err)
		}
		if err := hybridConnect(ctx, conn, port); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return conn, nil
	}
}
