package roothelper

import (
	"log/slog"
	"time"

	"github.com/bangerdev/banger/internal/rpc"
)

// Limits of the helper's socket, which its owner uid can reach: a hostile
// owner must not be able to stop root's process or grow it without bound.
const (
	// MaxRequestBytes caps one request. The largest legitimate one is a
	// full dns.update (maxDNSRecords records of 63-character names, about
	// 400 KiB).
	MaxRequestBytes = 512 << 10
	maxFrameBytes   = 64 << 10 // no helper method reads data frames
	requestTimeout  = 5 * time.Second
	maxConns        = 64
)

// serverOptions are the helper socket's: peer check and limits.
func (h *Helper) serverOptions(lg *slog.Logger) rpc.ServerOptions {
	return rpc.ServerOptions{
		Logger: lg, Authorize: h.authorize,
		// A request the helper does not fully understand is not acted
		// on: unknown fields and data after the params are refused.
		StrictParams:    true,
		MaxRequestBytes: MaxRequestBytes, MaxFrameBytes: maxFrameBytes,
		RequestTimeout: requestTimeout, MaxConns: maxConns,
	}
}
