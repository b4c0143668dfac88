package rpc_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
)

// fuzzTable is the fuzz server's method table: every daemon method with
// params, registered through its own descriptor with a handler that
// returns the decoded request, so the server decodes each request into the
// type the daemon does. mk makes a fresh value of that type.
type fuzzTable struct {
	ms *rpc.Methods
	mk map[string]func() any
}

// echo registers m's name, answering with its decoded request.
func echo[Req, Resp any](tb fuzzTable, m api.Method[Req, Resp]) {
	rpc.Register(tb.ms, api.Method[Req, Req]{Name: m.Name}, func(_ context.Context, _ *rpc.Call, req Req) (Req, error) { return req, nil })
	tb.mk[m.Name] = func() any { return new(Req) }
}

// fuzzMethods registers the daemon's methods that take params, and
// "stream", which counts the client's data frames until its eof.
func fuzzMethods() fuzzTable {
	tb := fuzzTable{ms: rpc.NewMethods(), mk: map[string]func() any{}}
	echo(tb, api.MethodVMCreate)
	echo(tb, api.MethodVMStart)
	echo(tb, api.MethodVMStop)
	echo(tb, api.MethodVMRestart)
	echo(tb, api.MethodVMRemove)
	echo(tb, api.MethodVMGet)
	echo(tb, api.MethodVMLogs)
	echo(tb, api.MethodVMExec)
	echo(tb, api.MethodVMSuspend)
	echo(tb, api.MethodVMResume)
	echo(tb, api.MethodVMSSHInfo)
	echo(tb, api.MethodVMForgetHostKey)
	echo(tb, api.MethodVMPorts)
	echo(tb, api.MethodVMForward)
	echo(tb, api.MethodVMCopy)
	echo(tb, api.MethodVMSessions)
	echo(tb, api.MethodKernelGet)
	echo(tb, api.MethodKernelRemove)
	echo(tb, api.MethodImageGet)
	echo(tb, api.MethodImageRemove)
	echo(tb, api.MethodKernelPull)
	echo(tb, api.MethodKernelImport)
	echo(tb, api.MethodImageBuild)
	echo(tb, api.MethodImageImport)
	echo(tb, api.MethodImagePull)
	echo(tb, api.MethodNetworkDown)
	echo(tb, api.MethodDebugSleep)
	echo(tb, api.MethodEventsWatch)
	rpc.Register(tb.ms, api.Method[api.Empty, int]{Name: "stream"}, func(ctx context.Context, c *rpc.Call, _ api.Empty) (int, error) {
		n := 0
		for {
			if _, err := c.Recv(ctx); err != nil {
				return n, nil
			}
			n++
		}
	})
	return tb
}

var wireCodes = map[string]bool{
	api.CodeInvalidArgument: true, api.CodeNotFound: true, api.CodeAlreadyExists: true,
	api.CodeFailedPrecondition: true, api.CodePermissionDenied: true, api.CodeUnavailable: true,
	api.CodeUnimplemented: true, api.CodeCanceled: true, api.CodeInternal: true,
}

// FuzzServeRequest writes hostile bytes to a real server on a unix socket,
// as a client would: the request line (any method of the daemon's table,
// any params) and the data frames after it. The server must answer every
// connection within its request timeout with well-formed frames ending in
// exactly one result or error frame (with a known code); a result is the
// params decoded into the method's type, which must survive a second trip
// through the same decoding unchanged. The server must go on serving.
func FuzzServeRequest(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"method":"vm.create","op_id":"op-1","params":{"name":"a","vcpus":2,"memory_mib":512}}` + "\n",
		`{"v":1,"method":"vm.exec","params":{"name":"a","argv":["sh","-c","id"],"tty":true}}` + "\n",
		`{"v":1,"method":"vm.cp","params":{"name":"a","src":"a:/etc/passwd","dst":"/tmp"}}` + "\n",
		`{"v":1,"method":"stream"}` + "\n" + `{"type":"data","kind":"stdin","payload":"aGk="}` + "\n" + `{"type":"data","kind":"eof"}` + "\n",
		`{"v":1,"method":"stream"}{"type":"data","payload":` + "\n",
		`{"v":2,"method":"vm.get"}`,
		`{"v":1,"method":"nope"}`,
		`{"v":1,"method":"vm.get","op_id":"../../evil\n"}`,
		`{"v":1,"method":"vm.get","params":[1,2,3]}`,
		`{"v":1,"method":"vm.get","params":{"name":1e999}}`,
		`{"v":1,"method":"vm.get","params":"\ud800"}`,
		`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`,
		"\x00\xff\xfe",
		``,
	} {
		f.Add([]byte(s))
	}
	sock := filepath.Join(f.TempDir(), "fuzz.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tb := fuzzMethods()
	srv := rpc.NewServer(tb.ms, rpc.ServerOptions{MaxRequestBytes: 64 << 10, MaxFrameBytes: 16 << 10, RequestTimeout: 500 * time.Millisecond})
	go func() { _ = srv.Serve(ctx, ln) }()
	f.Fuzz(func(t *testing.T, data []byte) {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatalf("the server stopped accepting: %v", err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		go func() {
			_, _ = conn.Write(data)
			_ = conn.(*net.UnixConn).CloseWrite()
		}()
		var frames []rpc.Frame
		br := bufio.NewReader(conn)
		for {
			line, err := br.ReadBytes('\n')
			if len(line) > 0 {
				var fr rpc.Frame
				if jerr := json.Unmarshal(line, &fr); jerr != nil {
					t.Fatalf("malformed frame %q: %v", line, jerr)
				}
				frames = append(frames, fr)
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("reading the answer: %v (frames so far %d)", err, len(frames))
				}
				break
			}
		}
		if len(frames) == 0 {
			t.Fatal("connection closed without an answer")
		}
		for _, fr := range frames[:len(frames)-1] {
			if fr.Type == rpc.FrameResult || fr.Type == rpc.FrameError {
				t.Fatalf("a %s frame before the last", fr.Type)
			}
		}
		last := frames[len(frames)-1]
		switch last.Type {
		case rpc.FrameError:
			if last.Error == nil || !wireCodes[last.Error.Code] || last.Error.Message == "" {
				t.Fatalf("error frame without a known code and a message: %+v", last.Error)
			}
		case rpc.FrameResult:
			var req rpc.Request
			if err := json.NewDecoder(bytes.NewReader(data)).Decode(&req); err != nil {
				t.Fatalf("a result for an undecodable request: %v", err)
			}
			mk, ok := tb.mk[req.Method]
			if !ok {
				return // "stream"
			}
			again := mk()
			if err := json.Unmarshal(last.Result, again); err != nil {
				t.Fatalf("%s: result does not decode into its own type: %v", req.Method, err)
			}
			back, _ := json.Marshal(again)
			want := mk()
			_ = json.Unmarshal(back, want)
			if !reflect.DeepEqual(again, want) {
				t.Fatalf("%s: params changed on a second trip:\n%s\n%s", req.Method, last.Result, back)
			}
		default:
			t.Fatalf("last frame is %q, not a result or error", last.Type)
		}
	})
}
