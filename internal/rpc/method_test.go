package rpc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/rpc"
)

type sumReq struct {
	Name string `json:"name"`
	Nums []int  `json:"nums"`
}

type sumResp struct {
	Name  string `json:"name"`
	Total int    `json:"total"`
	Peer  uint32 `json:"peer"`
}

var (
	methodSum  = api.Method[sumReq, sumResp]{Name: "t.sum", Tracked: true}
	methodEcho = api.Method[api.Empty, int]{Name: "t.echo"} // streams data frames back, counts them
)

func typedMethods() *rpc.Methods {
	ms := rpc.NewMethods()
	rpc.Register(ms, methodSum, func(ctx context.Context, c *rpc.Call, req sumReq) (sumResp, error) {
		if req.Name == "" {
			return sumResp{}, api.Errorf(api.CodeInvalidArgument, "t.sum: name is empty")
		}
		total := 0
		for i, n := range req.Nums {
			total += n
			c.Progress(progress.Event{Stage: "adding", Done: int64(i + 1), Total: int64(len(req.Nums))})
		}
		return sumResp{Name: req.Name, Total: total, Peer: c.Peer.UID}, nil
	})
	rpc.Register(ms, methodEcho, func(ctx context.Context, c *rpc.Call, _ api.Empty) (int, error) {
		n := 0
		for {
			f, err := c.Recv(ctx)
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			if err != nil {
				return 0, err
			}
			n++
			if err := c.Send("echo", f.Payload); err != nil {
				return 0, err
			}
		}
	})
	return ms
}

func serveTyped(t *testing.T, opts rpc.ServerOptions) *rpc.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "typed.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rpc.NewServer(typedMethods(), opts).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return rpc.NewClient(sock)
}

// Invoke sends the typed request and returns the typed result, with the
// progress events on the way and typed errors carrying code and op_id.
func TestInvokeRoundTrip(t *testing.T) {
	c := serveTyped(t, rpc.ServerOptions{})
	var events []progress.Event
	res, err := rpc.Invoke(context.Background(), c, methodSum, sumReq{Name: "n", Nums: []int{1, 2, 39}},
		rpc.CallOptions{OnEvent: func(ev progress.Event) { events = append(events, ev) }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Name != "n" || res.Total != 42 {
		t.Errorf("result = %+v, want n/42", res)
	}
	if len(events) != 3 || events[2].Done != 3 {
		t.Errorf("events = %+v, want 3 adding steps", events)
	}
	_, err = rpc.Invoke(rpc.WithOpID(context.Background(), "op-typed-1"), c, methodSum, sumReq{})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeInvalidArgument || ae.OpID != "op-typed-1" || !strings.Contains(ae.Message, "name is empty") {
		t.Errorf("handler error = %#v", err)
	}
	// A request that does not decode into the request type never reaches
	// the handler.
	err = c.CallRaw(context.Background(), methodSum.Name, map[string]any{"name": 7}, nil)
	if api.CodeOf(err) != api.CodeInvalidArgument || !strings.Contains(err.Error(), "t.sum: bad params") {
		t.Errorf("mistyped params: %v", err)
	}
}

// A stream opened through its descriptor exchanges data frames and decodes
// its typed result.
func TestOpenStreamResult(t *testing.T) {
	c := serveTyped(t, rpc.ServerOptions{})
	s, err := rpc.OpenStream(context.Background(), c, methodEcho, api.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, w := range []string{"a", "b", "c"} {
		if err := s.Send("in", w); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	echoed := 0
	for {
		f, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == rpc.FrameData && f.Kind == "echo" {
			echoed++
			if _, err := s.Result(f); err == nil {
				t.Error("Result accepted a data frame")
			}
			continue
		}
		if f.Type == rpc.FrameResult {
			n, err := s.Result(f)
			if err != nil || n != 3 || echoed != 3 {
				t.Fatalf("result %d, %v after %d echoes, want 3", n, err, echoed)
			}
			return
		}
	}
}

// Unknown fields: ignored by default (an older server, a newer client's
// optional field), refused by a StrictParams server, with what to do.
func TestStrictParamsOption(t *testing.T) {
	params := map[string]any{"name": "n", "nums": []int{1}, "later_field": true}
	lax := serveTyped(t, rpc.ServerOptions{})
	var res sumResp
	if err := lax.CallRaw(context.Background(), methodSum.Name, params, &res); err != nil || res.Total != 1 {
		t.Fatalf("lax server: %+v, %v", res, err)
	}
	strict := serveTyped(t, rpc.ServerOptions{StrictParams: true})
	err := strict.CallRaw(context.Background(), methodSum.Name, params, nil)
	if api.CodeOf(err) != api.CodeInvalidArgument || !strings.Contains(err.Error(), `unknown field "later_field"`) || !strings.Contains(err.Error(), "sumReq") {
		t.Fatalf("strict server: %v", err)
	}
	if _, err := rpc.Invoke(context.Background(), strict, methodSum, sumReq{Name: "n", Nums: []int{2}}); err != nil {
		t.Fatalf("strict server, exact params: %v", err)
	}
	// DecodeParams is the same decoding without a socket.
	var v sumReq
	if err := rpc.DecodeParams("t.sum", []byte(`{"name":"x"} {"name":"y"}`), &v, true); err == nil {
		t.Error("strict decoding accepted data after the params")
	}
}

func TestRegisterTwicePanics(t *testing.T) {
	ms := rpc.NewMethods()
	h := func(context.Context, *rpc.Call, api.Empty) (api.Empty, error) { return api.Empty{}, nil }
	rpc.Register(ms, api.Method[api.Empty, api.Empty]{Name: "t.once"}, h)
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), `"t.once" registered twice`) {
			t.Fatalf("second registration: recover() = %v", r)
		}
	}()
	rpc.Register(ms, api.Method[api.Empty, api.Empty]{Name: "t.once", Tracked: true}, h)
}
