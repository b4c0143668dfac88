package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/vishvananda/netlink"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
)

// mcpStep is one tool call as the TypeScript client saw it.
type mcpStep struct {
	IsError       bool            `json:"isError"`
	Text          string          `json:"text"`
	Structured    json.RawMessage `json:"structured"`
	Progress      []any           `json:"progress"`
	ProtocolError string          `json:"protocolError"`
}

type mcpReport struct {
	Tools []struct {
		Name      string `json:"name"`
		HasInput  bool   `json:"hasInput"`
		HasOutput bool   `json:"hasOutput"`
	} `json:"tools"`
	Steps        map[string]mcpStep `json:"steps"`
	Console      string             `json:"console"`
	ConsoleError string             `json:"console_error"`
	Fatal        string             `json:"fatal"`
}

// mcpClientDir installs the pinned TypeScript SDK (npm ci, from the lockfile)
// when scripts/test.sh has not already, and returns the client's directory.
func mcpClientDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("testdata/mcp-client")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@modelcontextprotocol", "sdk", "package.json")); err != nil {
		npm := testutil.RequireBinary(t, "npm")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
		}
	}
	return dir
}

// TestMCPServerWithTypeScriptClient drives `banger mcp` with the official
// TypeScript SDK over stdio: tools listed, a command in a fresh VM, a file
// written and read back, the operator's [mcp] limits enforced by the daemon
// (count, memory, network, exec timeout), and bad input answered with the
// reason. Nothing is left behind.
func TestMCPServerWithTypeScriptClient(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	node := testutil.RequireBinary(t, "node")
	dir := mcpClientDir(t)
	in := vmInstance(t)
	if err := os.MkdirAll(filepath.Dir(in.p.ConfigFile()), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := "[mcp]\nmax_vms = 1\nmax_memory = 768\nallow_network = false\ndefault_timeout = \"8s\"\n"
	if err := os.WriteFile(in.p.ConfigFile(), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	in.ok("banger", "daemon", "stop")
	in.ok("banger", "daemon", "start")

	// A VM made by the CLI is not counted against max_vms.
	in.ok("banger", "vm", "create", "--name", "cli-vm", "--memory", "512M")

	// Host listeners the MCP guests must not reach (allow_network = false):
	// one on the bridge's gateway address, one on an outside address (on
	// the namespace's loopback: the host's input path). The CLI VM, under
	// no such limit, reaches both: the positive control.
	gw := bridgeGateway(t)
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(198, 51, 100, 1), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	in.ok("banger", "vm", "start", "cli-vm")
	hostLn := peerListener(t, "0.0.0.0:0")
	_, port, _ := net.SplitHostPort(hostLn.ln.Addr().String())
	targets := gw + "/" + port + " 198.51.100.1/" + port
	for _, tg := range strings.Fields(targets) {
		out, errOut, code := in.run("banger", "vm", "exec", "cli-vm", "--", "timeout", "5", "bash", "-c", "exec 3<>/dev/tcp/"+tg+" && echo connected")
		if code != 0 || !strings.Contains(out, "connected") {
			t.Fatalf("control: the CLI VM could not reach %s: exit %d %q %q", tg, code, out, errOut)
		}
	}
	if peers := hostLn.wait(2, 10*time.Second); len(peers) != 2 {
		t.Fatalf("control: the host listener saw %v, want the CLI VM twice", peers)
	}
	in.ok("banger", "vm", "stop", "cli-vm") // its CPU is not needed by the rest

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(dir, "client.mjs"), filepath.Join(binDir, "banger"))
	cmd.Dir = dir
	// A host file a guest symlink will aim at: vm_read_file must not serve it.
	secret := filepath.Join(t.TempDir(), "host-secret")
	if err := os.WriteFile(secret, []byte("host only\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(in.env(), "MCP_HOST_SECRET="+secret, "MCP_NET_TARGETS="+targets)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("node client: %v\nstderr:\n%s\ndaemon log:\n%s", err, stderr.String(), readFile(in.p.DaemonLog()))
	}
	t.Logf("mcp scenario took %s", time.Since(start).Round(time.Millisecond))
	var r mcpReport
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("client report: %v\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if r.Fatal != "" {
		t.Fatalf("client failed: %s\nstderr:\n%s", r.Fatal, stderr.String())
	}
	step := func(name string) mcpStep {
		t.Helper()
		s, ok := r.Steps[name]
		if !ok {
			t.Fatalf("step %s missing from the report", name)
		}
		return s
	}
	ok := func(name string, out any) mcpStep {
		t.Helper()
		s := step(name)
		if s.ProtocolError != "" || s.IsError {
			t.Fatalf("%s failed: %s%s", name, s.ProtocolError, s.Text)
		}
		if out != nil {
			if err := json.Unmarshal(s.Structured, out); err != nil {
				t.Fatalf("%s structured result: %v (%s)", name, err, s.Structured)
			}
		}
		return s
	}
	refused := func(name, reason string) {
		t.Helper()
		s := step(name)
		msg := s.Text + s.ProtocolError
		if !(s.IsError || s.ProtocolError != "") || !strings.Contains(msg, reason) {
			t.Errorf("%s: want an error saying %q, got isError=%v %q", name, reason, s.IsError, msg)
		}
	}

	var names []string
	for _, tl := range r.Tools {
		names = append(names, tl.Name)
		if !tl.HasInput || !tl.HasOutput {
			t.Errorf("tool %s: input schema %v, output schema %v", tl.Name, tl.HasInput, tl.HasOutput)
		}
	}
	for _, want := range []string{"vm_run", "vm_create", "vm_exec", "vm_write_file", "vm_read_file", "vm_ports", "vm_forward", "vm_list", "vm_remove", "vm_snapshot", "vm_fork", "snapshot_list"} {
		if !slices.Contains(names, want) {
			t.Errorf("tools/list lacks %s: %v", want, names)
		}
	}

	var run struct {
		ExitCode int    `json:"exit_code"`
		Stdout   string `json:"stdout"`
		Removed  bool   `json:"removed"`
		VM       struct {
			Name   string `json:"name"`
			Origin string `json:"origin"`
		} `json:"vm"`
	}
	runStep := ok("run", &run)
	if run.ExitCode != 0 || !strings.Contains(run.Stdout, "Linux") || !run.Removed || run.VM.Origin != model.OriginMCP {
		t.Errorf("vm_run uname -a: %+v", run)
	}
	if len(runStep.Progress) == 0 {
		t.Errorf("vm_run sent no progress notifications")
	}

	refused("bad_memory", "memory_mib -1 is negative")
	refused("over_memory", "above mcp.max_memory (768 MiB)")
	refused("shared_network", "allow_network is false")
	ok("create", nil)
	refused("over_count", "mcp.max_vms reached: 1 VMs created through MCP exist (mcpdev)")

	ok("write", nil)
	var read struct {
		Content string `json:"content"`
		Bytes   int64  `json:"bytes"`
	}
	ok("read", &read)
	if read.Content != "hello from mcp\né\n" {
		t.Errorf("read back %q", read.Content)
	}
	var res struct {
		ExitCode int    `json:"exit_code"`
		Stdout   string `json:"stdout"`
	}
	ok("stat", &res)
	if res.ExitCode != 0 || strings.TrimSpace(res.Stdout) != "600 18" {
		t.Errorf("written file mode/size in the guest: %+v (want 600 18)", res)
	}
	ok("exec_env", &res)
	if res.Stdout != "hi\n/root/mcp\nfrom stdin" {
		t.Errorf("vm_exec env/workdir/stdin: %q", res.Stdout)
	}
	ok("big_read", nil)
	refused("read_big", "above the 1048576 byte limit of vm_read_file")
	refused("read_dir", "is not a regular file")
	var flood struct {
		ExitCode        int    `json:"exit_code"`
		Stdout          string `json:"stdout"`
		Stderr          string `json:"stderr"`
		StdoutTruncated bool   `json:"stdout_truncated"`
	}
	ok("flood", &flood)
	if len(flood.Stdout) != 1<<20 || !flood.StdoutTruncated || strings.Trim(flood.Stdout, "a") != "" || flood.Stderr != "tail\n" {
		t.Errorf("3 MiB of guest output: got %d bytes (truncated %v), stderr %q; want the first 1 MiB, flagged", len(flood.Stdout), flood.StdoutTruncated, flood.Stderr)
	}
	ok("link", nil)
	refused("read_link", "is not a regular file")
	if s := step("read_link"); strings.Contains(s.Text, "host only") {
		t.Errorf("a guest symlink served a host file: %q", s.Text)
	}
	refused("timeout", "timed out after 8s") // asked for 3600 s: the daemon's cap holds
	ok("after_timeout", &res)
	if strings.TrimSpace(res.Stdout) != "gone" {
		t.Errorf("the timed-out sleep still runs in the guest: %q", res.Stdout)
	}
	refused("forward", "allow_network is false")
	ok("ports", nil)
	ok("net", &res)
	if want := "refused:" + strings.ReplaceAll(targets, " ", "\nrefused:") + "\n"; res.Stdout != want {
		t.Errorf("allow_network=false guest probing the host: %q, want %q", res.Stdout, want)
	}
	var snap struct {
		Name      string `json:"name"`
		Kind      string `json:"kind"`
		SourceVM  string `json:"source_vm"`
		MemoryMiB int    `json:"memory_mib"`
	}
	ok("snapshot", &snap)
	if snap.Name != "mcpsnap" || snap.Kind != model.SnapshotKindSnapshot || snap.SourceVM != "mcpdev" || snap.MemoryMiB != 512 {
		t.Errorf("vm_snapshot: %+v", snap)
	}
	refused("snapshot_bad_name", "as: ")
	refused("fork_over", "mcp.max_vms would be exceeded: 1 VMs created through MCP exist (mcpdev) and 2 more were asked for, at most 1")
	var snaps struct {
		Snapshots []struct {
			Name string `json:"name"`
		} `json:"snapshots"`
	}
	ok("snapshots", &snaps)
	if len(snaps.Snapshots) != 1 || snaps.Snapshots[0].Name != "mcpsnap" {
		t.Errorf("snapshot_list: %+v", snaps)
	}
	refused("unknown_vm", "nosuchvm")
	var list struct {
		VMs []struct {
			Name   string `json:"name"`
			Origin string `json:"origin"`
		} `json:"vms"`
	}
	ok("list", &list)
	if len(list.VMs) != 2 {
		t.Errorf("vm_list: %+v (want cli-vm and mcpdev)", list)
	}
	if r.ConsoleError != "" || len(r.Console) == 0 || len(r.Console) > 64<<10 {
		t.Errorf("console resource empty (error %q)", r.ConsoleError)
	}
	ok("remove", nil)
	ok("list_after", &list)
	if len(list.VMs) != 1 || list.VMs[0].Name != "cli-vm" {
		t.Errorf("after vm_remove: %+v", list)
	}
	var fromRun struct {
		ExitCode int    `json:"exit_code"`
		Stdout   string `json:"stdout"`
		Removed  bool   `json:"removed"`
		VM       struct {
			Origin    string `json:"origin"`
			MemoryMiB int    `json:"memory_mib"`
			Network   string `json:"network"`
		} `json:"vm"`
	}
	ok("run_from", &fromRun)
	wantFrom := "hello from mcp\né\nrefused:" + strings.ReplaceAll(targets, " ", "\nrefused:") + "\n"
	if fromRun.ExitCode != 0 || fromRun.Stdout != wantFrom || !fromRun.Removed || fromRun.VM.Origin != model.OriginMCP ||
		fromRun.VM.MemoryMiB != 512 || fromRun.VM.Network != model.NetworkIsolated {
		t.Errorf("vm_run from the snapshot: %+v, want stdout %q", fromRun, wantFrom)
	}
	refused("run_from_shape", "memory_mib cannot be combined with from or template")
	refused("run_template_not", "is a snapshot, not a template")
	if peers := hostLn.wait(1, time.Second); len(peers) != 2 {
		t.Errorf("the host listener saw %v: an MCP guest reached it", peers)
	}
	refused("unknown_tool", "vm_teleport")
	in.ok("banger", "snapshot", "rm", "mcpsnap")

	// The limits live in the daemon: a client speaking the daemon's API
	// directly with the MCP origin gets the same refusals, and leaves nothing.
	_, err = rpc.Invoke(ctx, in.client(), api.MethodVMCreate, api.VMCreate{Name: "direct", MemoryMiB: 4096, Origin: model.OriginMCP})
	if !errors.Is(err, &api.Error{Code: api.CodePermissionDenied}) {
		t.Errorf("direct mcp-origin create above max_memory: %v", err)
	}
	_, err = rpc.Invoke(ctx, in.client(), api.MethodVMCreate, api.VMCreate{Name: "direct", Origin: "admin"})
	if !errors.Is(err, &api.Error{Code: api.CodeInvalidArgument}) {
		t.Errorf("unknown origin: %v", err)
	}
	var l api.VMList
	if err := json.Unmarshal([]byte(in.ok("banger", "vm", "ls", "--json")), &l); err != nil {
		t.Fatal(err)
	}
	if len(l.VMs) != 1 || l.VMs[0].Name != "cli-vm" {
		t.Errorf("VMs left: %+v", l.VMs)
	}
	if dirs := in.vmDirs(); len(dirs) != 1 {
		t.Errorf("VM dirs left: %v", dirs)
	}
}

// TestMCPForwardLivesWithTheServer: with the default [mcp] limits a
// vm_forward from MCP works (the guest's sshd answers through it), the
// console resource reads, and the forward ends when `banger mcp` exits.
func TestMCPForwardLivesWithTheServer(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.Command(filepath.Join(binDir, "banger"), "mcp")
	cmd.Env = in.env()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e-go"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	callOK := func(name string, args map[string]any, out any) {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if res.IsError {
			t.Fatalf("%s: %s", name, res.Content[0].(*mcp.TextContent).Text)
		}
		if out != nil {
			raw, _ := json.Marshal(res.StructuredContent)
			if err := json.Unmarshal(raw, out); err != nil {
				t.Fatalf("%s result: %v", name, err)
			}
		}
	}
	callOK("vm_create", map[string]any{"name": "fwd", "memory_mib": 512}, nil)
	// The agent answers before the guest's sshd listens: wait for it.
	deadline := time.Now().Add(60 * time.Second)
	for {
		var ports struct {
			Ports []api.Port `json:"ports"`
		}
		callOK("vm_ports", map[string]any{"name": "fwd"}, &ports)
		if slices.ContainsFunc(ports.Ports, func(p api.Port) bool { return p.Port == 22 && strings.HasPrefix(p.Proto, "tcp") }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd never listened in the guest: %+v", ports)
		}
		time.Sleep(500 * time.Millisecond)
	}
	var fw struct {
		HostAddress string `json:"host_address"`
	}
	callOK("vm_forward", map[string]any{"name": "fwd", "guest_port": 22}, &fw)
	if !strings.HasPrefix(fw.HostAddress, "127.0.0.1:") {
		t.Fatalf("host_address %q is not on loopback", fw.HostAddress)
	}
	conn, err := net.DialTimeout("tcp", fw.HostAddress, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	banner, err := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if !strings.HasPrefix(banner, "SSH-2.0-") {
		t.Fatalf("through the forward: %q, %v (want the guest sshd's banner)", banner, err)
	}

	rr, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "banger://vm/fwd/console"})
	if err != nil || len(rr.Contents) != 1 || rr.Contents[0].Text == "" {
		t.Fatalf("console resource: %+v, %v", rr, err)
	}
	if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "banger://vm/nosuch/console"}); err == nil {
		t.Fatalf("console of a VM that does not exist was served")
	}

	// The forward belongs to the server: once it has exited, nothing listens.
	cs.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("banger mcp did not exit after its client closed stdin")
	}
	if c, err := net.DialTimeout("tcp", fw.HostAddress, 2*time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts after banger mcp exited", fw.HostAddress)
	}
}

// bridgeGateway is the host's address on banger's bridge in this namespace.
func bridgeGateway(t *testing.T) string {
	t.Helper()
	br, err := netlink.LinkByName("banger0")
	if err != nil {
		t.Fatalf("bridge: %v", err)
	}
	addrs, err := netlink.AddrList(br, netlink.FAMILY_V4)
	if err != nil || len(addrs) == 0 {
		t.Fatalf("bridge addresses: %v %v", addrs, err)
	}
	return addrs[0].IP.String()
}

// peerRecorder accepts on a host listener and records who connected.
type peerRecorder struct {
	ln    net.Listener
	mu    sync.Mutex
	peers []string
}

func peerListener(t *testing.T, addr string) *peerRecorder {
	t.Helper()
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	r := &peerRecorder{ln: ln}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.peers = append(r.peers, c.RemoteAddr().String())
			r.mu.Unlock()
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return r
}

// wait returns the peers seen once there are n of them, or after d.
func (r *peerRecorder) wait(n int, d time.Duration) []string {
	deadline := time.Now().Add(d)
	for {
		r.mu.Lock()
		p := slices.Clone(r.peers)
		r.mu.Unlock()
		if len(p) >= n || time.Now().After(deadline) {
			return p
		}
		time.Sleep(50 * time.Millisecond)
	}
}
