package roothelper

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
)

// helperWireNames are the helper's method names before descriptors
// existed: all still served.
var helperWireNames = []string{
	"helper.ping", "helper.shutdown", "helper.identity", "network.up", "network.down", "network.state",
	"tap.create", "tap.delete", "tap.open", "dns.update", "vm.cgroup.adopt", "image.build",
}

func testHelper(t *testing.T) *Helper {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &Helper{opts: Options{OwnerUID: os.Getuid()}, log: slog.New(slog.DiscardHandler), life: ctx, shutdown: cancel}
}

// Every MethodHelper… descriptor of internal/api is served by the helper,
// exactly once (Register panics on a second), and nothing else is.
func TestEveryHelperDescriptorIsRegisteredOnce(t *testing.T) {
	want := map[string]string{}
	for _, m := range testutil.APIMethods(t) {
		if !m.Helper {
			continue
		}
		if prev, dup := want[m.Name]; dup {
			t.Errorf("%s and %s both name helper method %q", prev, m.Var, m.Name)
		}
		want[m.Name] = m.Var
	}
	var ms *rpc.Methods
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("building the helper's method table: %v", r)
			}
		}()
		ms = testHelper(t).methods()
	}()
	got := ms.Names()
	for name, v := range want {
		if !slices.Contains(got, name) {
			t.Errorf("%s (%q) is declared but not registered on the helper", v, name)
		}
	}
	for _, name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("the helper serves %q, which no MethodHelper… descriptor declares", name)
		}
	}
	for _, name := range helperWireNames {
		if !slices.Contains(got, name) {
			t.Errorf("wire name %q is no longer served by the helper", name)
		}
	}
}

// The helper's server decodes strictly: params with a field the method's
// request type lacks are refused with an invalid_argument error naming the
// method and the field, before the handler runs (the DNS table is
// untouched); the same params without it are accepted.
func TestHelperRefusesUnknownFields(t *testing.T) {
	h := testHelper(t)
	ms := rpc.NewMethods()
	dns := h.dnsMethods(ms)
	rpc.Register(ms, api.MethodHelperPing, h.ping)
	sock := filepath.Join(t.TempDir(), "helper.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rpc.NewServer(ms, h.serverOptions(h.log)).Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	c := rpc.NewClient(sock)

	refused := func(what, method string, params any, field string) {
		t.Helper()
		err := c.CallRaw(context.Background(), method, params, nil)
		if api.CodeOf(err) != api.CodeInvalidArgument {
			t.Fatalf("%s: %v, want invalid_argument", what, err)
		}
		for _, want := range []string{method + ": bad params", `unknown field "` + field + `"`, "accepts only the fields of"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not say %q", what, err, want)
			}
		}
	}
	refused("ping with a field", api.MethodHelperPing.Name, map[string]any{"force": true}, "force")

	good := api.DNSUpdate{Domain: "banger", Records: []api.DNSRecord{{Name: "a", IP: "10.213.77.2"}}}
	st, err := rpc.Invoke(context.Background(), c, api.MethodHelperDNSUpdate, good)
	if err != nil || st.Names != 1 {
		t.Fatalf("valid dns.update: %+v, %v", st, err)
	}
	refused("dns.update with a field", api.MethodHelperDNSUpdate.Name, map[string]any{
		"domain": "evil", "records": []map[string]string{{"name": "b", "ip": "10.213.77.3"}, {"name": "c", "ip": "10.213.77.4"}},
		"upstream": "192.0.2.1:53",
	}, "upstream")
	if n := dns.table.len(); n != 1 {
		t.Errorf("a refused dns.update changed the table: %d names, want 1", n)
	}
	if _, ok := dns.table.LookupName("b"); ok {
		t.Error("a refused dns.update added name b")
	}
	dns.mu.Lock()
	domain := dns.domain
	dns.mu.Unlock()
	if domain != "banger" {
		t.Errorf("a refused dns.update set the domain to %q", domain)
	}
	// Absent params and an empty object are fine for a method taking none.
	if err := c.CallRaw(context.Background(), api.MethodHelperPing.Name, nil, nil); err != nil {
		t.Errorf("ping without params: %v", err)
	}
	if _, err := rpc.Invoke(context.Background(), c, api.MethodHelperPing, api.Empty{}); err != nil {
		t.Errorf("ping with {}: %v", err)
	}
}
