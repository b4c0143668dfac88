package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/events"
	"github.com/bangerdev/banger/internal/opstate"
	"github.com/bangerdev/banger/internal/roothelper"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
)

// wireNames are the daemon's method names before descriptors existed: the
// protocol keeps every one of them (new methods may be added).
var wireNames = []string{
	"daemon.ping", "daemon.status", "daemon.shutdown", "daemon.operations.list", "debug.sleep",
	"vm.create", "vm.start", "vm.stop", "vm.restart", "vm.rm", "vm.list", "vm.get", "vm.logs", "vm.exec",
	"vm.suspend", "vm.resume", "kernel.pull", "kernel.import", "kernel.list", "kernel.get", "kernel.rm",
	"image.build", "image.pull", "image.import", "image.list", "image.get", "image.rm",
	"network.down", "network.state", "events.watch", "vm.ssh_info", "vm.forget_host_key", "vm.ports",
	"vm.forward", "vm.cp", "vm.sessions", "vm.attach", "vm.snapshot", "vm.fork", "snapshot.list",
	"snapshot.get", "snapshot.rm", "template.create", "template.match", "vm.sync",
}

// wasUntracked is the old untracked map: these stay out of the operations
// list; every other name of wireNames stays in it.
var wasUntracked = []string{
	"vm.ssh_info", "vm.ports", "vm.sessions", "vm.list", "vm.get", "vm.logs", "kernel.list", "kernel.get",
	"image.list", "image.get", "daemon.ping", "daemon.status", "daemon.operations.list", "daemon.shutdown",
	"network.state", "events.watch",
}

// tableOf builds the daemon's method table, reporting a double
// registration (Register panics on one) as a test failure.
func tableOf(t *testing.T, d *Daemon) (ms *rpc.Methods) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("building the daemon's method table: %v", r)
		}
	}()
	return d.methods()
}

// Every daemon descriptor declared in internal/api is served by the
// daemon, exactly once, with its descriptor's tracking; nothing else is.
func TestEveryDaemonDescriptorIsRegisteredOnce(t *testing.T) {
	all := testutil.APIMethods(t)
	want := map[string]testutil.APIMethod{}
	for _, m := range all {
		if m.Helper {
			continue
		}
		if prev, dup := want[m.Name]; dup {
			t.Errorf("%s and %s both name daemon method %q", prev.Var, m.Var, m.Name)
		}
		want[m.Name] = m
	}
	if len(want) < len(wireNames) {
		t.Fatalf("found %d daemon descriptors in internal/api, fewer than the %d wire names", len(want), len(wireNames))
	}
	ms := tableOf(t, &Daemon{opts: Options{EnableTestMethods: true}})
	got := ms.Names()
	for name, m := range want {
		if !slices.Contains(got, name) {
			t.Errorf("%s (%q) is declared but not registered on the daemon", m.Var, name)
			continue
		}
		if ms.Tracked(name) != m.Tracked {
			t.Errorf("%q registered with tracked=%v, its descriptor %s says %v", name, ms.Tracked(name), m.Var, m.Tracked)
		}
	}
	for _, name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("the daemon serves %q, which no daemon descriptor declares", name)
		}
	}
	for _, name := range wireNames {
		if !slices.Contains(got, name) {
			t.Errorf("wire name %q is no longer served: old clients would break", name)
		}
		if untracked := slices.Contains(wasUntracked, name); ms.Tracked(name) == untracked {
			t.Errorf("%q: tracked=%v, before descriptors it was %v", name, ms.Tracked(name), !untracked)
		}
	}
	// Test-only methods only with the option.
	if slices.Contains(tableOf(t, &Daemon{}).Names(), api.MethodDebugSleep.Name) {
		t.Errorf("%s is served without EnableTestMethods", api.MethodDebugSleep.Name)
	}
}

// serveDaemon serves d's real method table with its operations hook on a
// fresh socket until the test ends.
func serveDaemon(t *testing.T, d *Daemon) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := rpc.NewServer(tableOf(t, d), rpc.ServerOptions{Logger: slog.New(slog.DiscardHandler), Hooks: rpc.Hooks{Start: d.trackOperation}})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return sock
}

func testDaemon(t *testing.T) *Daemon {
	return &Daemon{
		opts:   Options{EnableTestMethods: true, Now: time.Now},
		log:    slog.New(slog.DiscardHandler),
		ops:    opstate.New(time.Now),
		events: events.New(time.Now, 0),
		// Nothing listens there: debug.sleep's helper ping fails fast.
		helper: roothelper.NewClient(filepath.Join(t.TempDir(), "no-helper.sock")),
	}
}

// A tracked method (debug.sleep) is in the operations list while it runs;
// an untracked one running at the same time (events.watch) is not, nor is
// the list call itself; both leave no entry behind.
func TestTrackedFromDescriptor(t *testing.T) {
	d := testDaemon(t)
	c := rpc.NewClient(serveDaemon(t, d))

	wctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	w, err := rpc.OpenStream(rpc.WithOpID(wctx, "op-watch"), c, api.MethodEventsWatch, api.EventsWatch{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if f, err := w.Next(); err != nil || f.Kind != api.KindSubscribed {
		t.Fatalf("events.watch first frame = %+v, %v", f, err)
	}

	slept := make(chan error, 1)
	go func() {
		_, err := rpc.Invoke(rpc.WithOpID(context.Background(), "op-sleep"), c, api.MethodDebugSleep, api.SleepParams{Milliseconds: 1500, Target: "t1"})
		slept <- err
	}()
	var listed []api.Operation
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		res, err := rpc.Invoke(context.Background(), c, api.MethodOperationsList, api.Empty{})
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(res.Operations, func(o api.Operation) bool { return o.OpID == "op-sleep" }) {
			listed = res.Operations
			break
		}
	}
	if len(listed) != 1 || listed[0].Method != api.MethodDebugSleep.Name || listed[0].Target != "t1" {
		t.Fatalf("operations while debug.sleep and events.watch run = %+v, want debug.sleep alone", listed)
	}
	if err := <-slept; err != nil {
		t.Fatal(err)
	}
	stopWatch()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		res, err := rpc.Invoke(context.Background(), c, api.MethodOperationsList, api.Empty{})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Operations) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("operations left after the calls ended: %+v", res.Operations)
		}
	}
}

// A client that writes raw frames with the wire names, as clients built
// before descriptors did (no params at all, or params with fields this
// daemon does not know), is served as before.
func TestRawFramesWithWireNamesServed(t *testing.T) {
	sock := serveDaemon(t, testDaemon(t))
	for _, tc := range []struct{ line, wantResult string }{
		{`{"v":1,"method":"daemon.ping"}`, `{}`},
		{`{"v":1,"method":"daemon.operations.list","op_id":"op-raw-1"}`, `{"operations":[]}`},
		{`{"v":1,"method":"debug.sleep","params":{"milliseconds":0,"target":"raw","from_a_newer_client":true}}`, `{}`},
	} {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write([]byte(tc.line + "\n")); err != nil {
			t.Fatal(err)
		}
		var f rpc.Frame
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
				t.Fatalf("%s: bad frame %q: %v", tc.line, sc.Bytes(), err)
			}
			if f.Type == rpc.FrameResult || f.Type == rpc.FrameError {
				break
			}
		}
		conn.Close()
		if f.Type != rpc.FrameResult || string(f.Result) != tc.wantResult {
			t.Errorf("%s: answered %+v (error %v), want result %s", tc.line, f, f.Error, tc.wantResult)
		}
	}
}
