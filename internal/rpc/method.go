package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"

	"github.com/bangerdev/banger/internal/api"
)

// Methods is a server's method table: each entry registered through its
// api.Method descriptor, which fixes its request and response types and
// whether its calls are tracked.
type Methods struct {
	routes map[string]route
}

type route struct {
	handler rawHandler
	tracked bool
}

// NewMethods returns an empty method table.
func NewMethods() *Methods { return &Methods{routes: map[string]route{}} }

// Register serves m with h on ms. The request is decoded into Req before h
// runs (strictly on a server built with StrictParams) and h's Resp is the
// result. Registering a name twice is a programming error and panics: two
// handlers for one name would leave which one serves to chance.
func Register[Req, Resp any](ms *Methods, m api.Method[Req, Resp], h func(ctx context.Context, c *Call, req Req) (Resp, error)) {
	ms.handle(m.Name, m.Tracked, func(ctx context.Context, c *Call) (any, error) {
		var req Req
		if err := c.decode(&req); err != nil {
			return nil, err
		}
		return h(ctx, c, req)
	})
}

func (ms *Methods) handle(name string, tracked bool, h rawHandler) {
	if name == "" {
		panic("rpc: register a method without a name")
	}
	if _, dup := ms.routes[name]; dup {
		panic(fmt.Sprintf("rpc: method %q registered twice", name))
	}
	ms.routes[name] = route{handler: h, tracked: tracked}
}

// Names lists the registered method names, sorted.
func (ms *Methods) Names() []string {
	names := make([]string, 0, len(ms.routes))
	for n := range ms.routes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Tracked reports whether name is registered and tracked.
func (ms *Methods) Tracked(name string) bool { return ms.routes[name].tracked }

// decode unmarshals the request's params into v, as an invalid_argument
// error. Absent or null params leave v zero. A strict server also refuses
// fields v does not have and anything after the value: a request it does
// not fully understand is not acted on.
func (c *Call) decode(v any) error {
	raw := bytes.TrimSpace(c.Params)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	if !c.strict {
		if err := json.Unmarshal(raw, v); err != nil {
			return api.Errorf(api.CodeInvalidArgument, "%s: bad params: %v", c.Method, err)
		}
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return api.Errorf(api.CodeInvalidArgument, "%s: bad params: %v (this server accepts only the fields of %T; a client and server of different versions: update and restart both)", c.Method, err, v)
	}
	if dec.More() {
		return api.Errorf(api.CodeInvalidArgument, "%s: bad params: data after the params object: send exactly one JSON value", c.Method)
	}
	return nil
}

// DecodeParams decodes raw params into v exactly as a server registered
// through Register does (strictly or not), for fuzzing the decoding of a
// server's request types without a socket.
func DecodeParams(method string, raw json.RawMessage, v any, strict bool) error {
	return (&Call{Method: method, Params: raw, strict: strict}).decode(v)
}

// Invoke calls m on the server behind c and returns its typed result.
// Progress events go to opts' OnEvent. The op_id comes from ctx (WithOpID)
// or is made here; it is on a returned *api.Error as well.
func Invoke[Req, Resp any](ctx context.Context, c *Client, m api.Method[Req, Resp], req Req, opts ...CallOptions) (Resp, error) {
	var res Resp
	err := c.CallRaw(ctx, m.Name, req, &res, opts...)
	return res, err
}

// InvokeWithFile is Invoke for a method whose handler passes one open file
// (Call.SendFile) before its result: the caller owns the returned file and
// closes it. On any error no descriptor is left open.
func InvokeWithFile[Req, Resp any](ctx context.Context, c *Client, m api.Method[Req, Resp], req Req, opts ...CallOptions) (*os.File, Resp, error) {
	var res Resp
	f, err := c.callWithFile(ctx, m.Name, req, &res, opts...)
	return f, res, err
}

// MethodStream is the client side of a streaming call of m (exec, logs -f,
// forward): data frames both ways through the embedded Stream, then one
// result of type Resp.
type MethodStream[Resp any] struct {
	*Stream
}

// OpenStream sends m's request and returns the stream; read frames with
// Next and decode the result frame with Result.
func OpenStream[Req, Resp any](ctx context.Context, c *Client, m api.Method[Req, Resp], req Req) (*MethodStream[Resp], error) {
	s, err := c.OpenRaw(ctx, m.Name, req)
	if err != nil {
		return nil, err
	}
	return &MethodStream[Resp]{Stream: s}, nil
}

// Result decodes a result frame read from the stream.
func (s *MethodStream[Resp]) Result(f Frame) (Resp, error) {
	var res Resp
	if f.Type != FrameResult {
		return res, fmt.Errorf("%s: %s frame is not the result", s.method, f.Type)
	}
	if len(f.Result) > 0 {
		if err := json.Unmarshal(f.Result, &res); err != nil {
			return res, fmt.Errorf("decode %s result: %w", s.method, err)
		}
	}
	return res, nil
}
