package mcpserver

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bangerdev/banger/internal/rpc"
)

// connect runs a Server against a daemon socket nobody serves and returns a
// client session: input checks happen before any daemon call.
func connect(t *testing.T) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := New(Config{Client: rpc.NewClient(filepath.Join(t.TempDir(), "none.sock")), Version: "test"})
	st, ct := mcp.NewInMemoryTransports()
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx, st) }()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close(); cancel(); <-errc })
	return cs
}

func TestToolsListed(t *testing.T) {
	cs := connect(t)
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
		if tl.InputSchema == nil || tl.OutputSchema == nil {
			t.Errorf("tool %s lacks an input or output schema", tl.Name)
		}
	}
	for _, want := range []string{"vm_run", "vm_create", "vm_exec", "vm_write_file", "vm_read_file", "vm_ports", "vm_forward", "vm_list", "vm_remove", "vm_suspend", "vm_resume",
		"vm_snapshot", "vm_fork", "snapshot_list"} {
		if !slices.Contains(names, want) {
			t.Errorf("tool %s missing from %v", want, names)
		}
	}
	tmpl, err := cs.ListResourceTemplates(context.Background(), nil)
	if err != nil || len(tmpl.ResourceTemplates) != 1 || tmpl.ResourceTemplates[0].URITemplate != "banger://vm/{name}/console" {
		t.Fatalf("resource templates = %+v, %v", tmpl, err)
	}
}

func TestBadInputIsAToolErrorWithTheReason(t *testing.T) {
	cs := connect(t)
	for _, c := range []struct {
		tool string
		args map[string]any
		want string
	}{
		{"vm_create", map[string]any{"memory_mib": -1}, "memory_mib -1 is negative"},
		{"vm_create", map[string]any{"network": "host"}, `network "host" must be`},
		{"vm_run", map[string]any{"command": []string{}}, "command is empty"},
		{"vm_exec", map[string]any{"name": "dev", "command": []string{"true"}, "workdir": "tmp"}, "must be an absolute guest path"},
		{"vm_exec", map[string]any{"name": "dev", "command": []string{"env"}, "env": []string{"=x"}}, "is not K=V"},
		{"vm_write_file", map[string]any{"name": "dev", "path": "etc/passwd", "content": "x"}, "must be an absolute guest path"},
		{"vm_write_file", map[string]any{"name": "dev", "path": "/tmp/../etc/x", "content": "x"}, "is not clean"},
		{"vm_write_file", map[string]any{"name": "dev", "path": "/tmp/x", "content": "x", "mode": "4755"}, "no set-uid"},
		{"vm_write_file", map[string]any{"name": "dev", "path": "/tmp/x", "content": strings.Repeat("a", DefaultMaxFileBytes+1)}, "above the 1048576 byte limit"},
		{"vm_read_file", map[string]any{"name": "dev", "path": "/"}, "names no file"},
		{"vm_forward", map[string]any{"name": "dev", "guest_port": 70000}, "not within 1..65535"},
		{"vm_run", map[string]any{"command": []string{"true"}, "from": "base", "memory_mib": 512}, "memory_mib cannot be combined with from or template"},
		{"vm_run", map[string]any{"command": []string{"true"}, "template": "base", "network": "shared"}, "network cannot be combined"},
		{"vm_run", map[string]any{"command": []string{"true"}, "from": "a", "template": "b"}, "give one"},
		{"vm_snapshot", map[string]any{}, `missing properties: ["name"]`},
		{"vm_snapshot", map[string]any{"name": ""}, "name is empty"},
		{"vm_snapshot", map[string]any{"name": "dev", "as": "../x"}, "as: "},
		{"vm_fork", map[string]any{"from": ""}, "from is empty"},
		{"vm_fork", map[string]any{"from": "base", "count": -1}, "count -1 is outside 1..64"},
		{"vm_fork", map[string]any{"from": "base", "count": 1000}, "count 1000 is outside 1..64"},
		{"snapshot_list", map[string]any{}, "not running"},
		// Valid input, no daemon: the call's error reaches the client too.
		{"vm_list", map[string]any{}, "not running"},
	} {
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: c.tool, Arguments: c.args})
		if err != nil {
			t.Errorf("%s %v: protocol error %v, want a tool error", c.tool, c.args["path"], err)
			continue
		}
		if !res.IsError || len(res.Content) == 0 {
			t.Errorf("%s: not an error result: %+v", c.tool, res)
			continue
		}
		text := res.Content[0].(*mcp.TextContent).Text
		if !strings.Contains(text, c.want) {
			t.Errorf("%s: error %q does not say %q", c.tool, text, c.want)
		}
	}
	// Input that breaks the schema (a string for a number) is refused before the handler.
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "vm_create", Arguments: map[string]any{"memory_mib": "lots"}})
	if err == nil && !res.IsError {
		t.Fatalf("schema-breaking input accepted: %+v", res)
	}
}

func TestBoundedBuffer(t *testing.T) {
	b := &boundedBuffer{max: 4}
	for _, s := range []string{"ab", "cdef", "gh"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("write %q = %d, %v", s, n, err)
		}
	}
	if string(b.b) != "abcd" || b.dropped != 4 {
		t.Fatalf("kept %q dropped %d; want abcd, 4", b.b, b.dropped)
	}
}
