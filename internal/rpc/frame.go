// Package rpc is banger's transport: one JSON request per connection on a unix
// socket, answered by zero or more event frames and exactly one result or
// error frame. Streaming methods (exec, logs -f) exchange data frames both
// ways before the result. Every request carries an op_id.
//
// Methods are typed: each is an api.Method descriptor (wire name, request
// and result types, tracked or not). Servers register handlers through it
// (Register); clients call through it (Invoke, OpenStream, InvokeWithFile).
// CallRaw and OpenRaw send what no descriptor allows, for tests and tools.
package rpc

import (
	"encoding/json"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/progress"
)

// Request is the first line a client sends.
type Request struct {
	V      int             `json:"v"`
	Method string          `json:"method"`
	OpID   string          `json:"op_id,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
}

// Frame types.
const (
	FrameEvent  = "event"  // server → client: progress
	FrameData   = "data"   // either way: a streaming method's payload
	FrameResult = "result" // server → client: final success
	FrameError  = "error"  // server → client: final failure
)

// KindEOF is the data frame a client sends when it has no more input.
const KindEOF = "eof"

// Frame is every line after the request.
type Frame struct {
	Type    string          `json:"type"`
	OpID    string          `json:"op_id,omitempty"`
	Event   *progress.Event `json:"event,omitempty"`
	Kind    string          `json:"kind,omitempty"` // data frames: "stdin", "stdout", "resize", …
	Payload json.RawMessage `json:"payload,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *api.Error      `json:"error,omitempty"`
}
