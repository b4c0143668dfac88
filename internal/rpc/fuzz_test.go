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

// daemonParams maps each daemon method that takes params to the type its
// handler decodes them into (see internal/daemon): the fuzz server decodes
// every request through Call.Decode into that type, as the daemon does
// (kept by hand: a new daemon method with params belongs here).
var daemonParams = map[string]func() any{
	api.MethodVMCreate:        func() any { return &api.VMCreate{} },
	api.MethodVMStart:         func() any { return &api.VMRef{} },
	api.MethodVMStop:          func() any { return &api.VMStop{} },
	api.MethodVMRestart:       func() any { return &api.VMStop{} },
	api.MethodVMRemove:        func() any { return &api.VMRemove{} },
	api.MethodVMGet:           func() any { return &api.VMRef{} },
	api.MethodVMLogs:          func() any { return &api.VMLogs{} },
	api.MethodVMExec:          func() any { return &api.VMExec{} },
	api.MethodVMSuspend:       func() any { return &api.VMRef{} },
	api.MethodVMResume:        func() any { return &api.VMRef{} },
	api.MethodVMSSHInfo:       func() any { return &api.VMRef{} },
	api.MethodVMForgetHostKey: func() any { return &api.VMRef{} },
	api.MethodVMPorts:         func() any { return &api.VMPorts{} },
	api.MethodVMForward:       func() any { return &api.VMForward{} },
	api.MethodVMCopy:          func() any { return &api.VMCopy{} },
	api.MethodVMSessions:      func() any { return &api.VMRef{} },
	api.MethodKernelGet:       func() any { return &api.ArtifactRef{} },
	api.MethodKernelRemove:    func() any { return &api.ArtifactRef{} },
	api.MethodImageGet:        func() any { return &api.ArtifactRef{} },
	api.MethodImageRemove:     func() any { return &api.ArtifactRef{} },
	api.MethodKernelPull:      func() any { return &api.KernelPull{} },
	api.MethodKernelImport:    func() any { return &api.KernelImport{} },
	api.MethodImageBuild:      func() any { return &api.ImageBuild{} },
	api.MethodImageImport:     func() any { return &api.ImageImport{} },
	api.MethodImagePull:       func() any { return &api.ImagePull{} },
	api.MethodNetworkDown:     func() any { return &api.NetworkDown{} },
	api.MethodDebugSleep:      func() any { return &api.SleepParams{} },
	api.MethodEventsWatch:     func() any { return &api.EventsWatch{} },
}

// fuzzMethods decodes each method's params into its type and returns
// them; "stream" counts the client's data frames until its eof.
func fuzzMethods() map[string]rpc.Handler {
	m := map[string]rpc.Handler{}
	for name, mk := range daemonParams {
		m[name] = func(ctx context.Context, c *rpc.Call) (any, error) {
			v := mk()
			if err := c.Decode(v); err != nil {
				return nil, err
			}
			return v, nil
		}
	}
	m["stream"] = func(ctx context.Context, c *rpc.Call) (any, error) {
		n := 0
		for {
			if _, err := c.Recv(ctx); err != nil {
				return n, nil
			}
			n++
		}
	}
	return m
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
	srv := rpc.NewServer(fuzzMethods(), rpc.ServerOptions{MaxRequestBytes: 64 << 10, MaxFrameBytes: 16 << 10, RequestTimeout: 500 * time.Millisecond})
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
			mk, ok := daemonParams[req.Method]
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
