package mcpserver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
)

// VMSpec is how a new VM is shaped; every field is optional.
type VMSpec struct {
	Name      string `json:"name,omitempty" jsonschema:"VM name (default: a generated one)"`
	Image     string `json:"image,omitempty" jsonschema:"image name (default: the default image)"`
	Kernel    string `json:"kernel,omitempty" jsonschema:"kernel name (default: the default kernel)"`
	CPUs      int    `json:"cpus,omitempty" jsonschema:"virtual CPUs"`
	MemoryMiB int    `json:"memory_mib,omitempty" jsonschema:"memory in MiB (the operator's [mcp] max_memory caps it)"`
	DiskGiB   int    `json:"disk_gib,omitempty" jsonschema:"root disk size in GiB"`
	Network   string `json:"network,omitempty" jsonschema:"isolated (default: reaches only the host) or shared (reaches other shared VMs)"`
}

func (v VMSpec) params() (api.VMCreate, error) {
	if v.CPUs < 0 {
		return api.VMCreate{}, fmt.Errorf("cpus %d is negative", v.CPUs)
	}
	if v.MemoryMiB < 0 {
		return api.VMCreate{}, fmt.Errorf("memory_mib %d is negative: give a size in MiB such as 1024, or leave it out for the default", v.MemoryMiB)
	}
	if v.DiskGiB < 0 || v.DiskGiB > 1<<20 {
		return api.VMCreate{}, fmt.Errorf("disk_gib %d is out of range", v.DiskGiB)
	}
	switch v.Network {
	case "", model.NetworkIsolated, model.NetworkShared:
	default:
		return api.VMCreate{}, fmt.Errorf("network %q must be %q or %q", v.Network, model.NetworkIsolated, model.NetworkShared)
	}
	return api.VMCreate{Name: v.Name, Image: v.Image, Kernel: v.Kernel, CPUs: v.CPUs, MemoryMiB: v.MemoryMiB,
		DiskBytes: int64(v.DiskGiB) << 30, Network: v.Network, Start: true, Origin: model.OriginMCP}, nil
}

// VMInfo is a VM as tools report it.
type VMInfo struct {
	Name      string `json:"name"`
	State     string `json:"state"`
	Image     string `json:"image"`
	CPUs      int    `json:"cpus"`
	MemoryMiB int    `json:"memory_mib"`
	Network   string `json:"network"`
	IP        string `json:"ip,omitempty"`
	BootID    string `json:"boot_id,omitempty"`
	Origin    string `json:"origin,omitempty" jsonschema:"mcp for VMs created through MCP"`
}

func info(vm model.VM) VMInfo {
	return VMInfo{Name: vm.Name, State: string(vm.State), Image: vm.Image, CPUs: vm.CPUs, MemoryMiB: vm.MemoryMiB,
		Network: vm.Network, IP: vm.IP, BootID: vm.BootID, Origin: vm.Origin}
}

// Command is what to run in a guest.
type Command struct {
	Command        []string `json:"command" jsonschema:"argv of the command, e.g. [\"sh\",\"-c\",\"echo hi\"]"`
	Env            []string `json:"env,omitempty" jsonschema:"environment as K=V"`
	Workdir        string   `json:"workdir,omitempty" jsonschema:"working directory in the guest (absolute)"`
	Stdin          string   `json:"stdin,omitempty" jsonschema:"text given to the command's stdin (at most 1 MiB)"`
	TimeoutSeconds int      `json:"timeout_seconds,omitempty" jsonschema:"end the command after this many seconds (the operator's [mcp] default_timeout is the default and the most)"`
}

func (c Command) opts() (execOpts, error) {
	if len(c.Command) == 0 || c.Command[0] == "" {
		return execOpts{}, errors.New("command is empty: give an argv such as [\"uname\", \"-a\"]")
	}
	if c.TimeoutSeconds < 0 {
		return execOpts{}, fmt.Errorf("timeout_seconds %d is negative", c.TimeoutSeconds)
	}
	if c.Workdir != "" && !path.IsAbs(c.Workdir) {
		return execOpts{}, fmt.Errorf("workdir %q must be an absolute guest path", c.Workdir)
	}
	for _, kv := range c.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return execOpts{}, fmt.Errorf("env entry %q is not K=V", kv)
		}
	}
	if len(c.Stdin) > maxStdinBytes {
		return execOpts{}, fmt.Errorf("stdin is %d bytes, above the %d byte limit", len(c.Stdin), maxStdinBytes)
	}
	o := execOpts{argv: c.Command, env: c.Env, dir: c.Workdir, timeout: c.TimeoutSeconds}
	if c.Stdin != "" {
		o.stdin = []byte(c.Stdin)
	}
	return o, nil
}

// RunInput is vm_run's input (VMSpec's and Command's fields, flat: the
// schema inference does not inline embedded structs).
type RunInput struct {
	Name           string   `json:"name,omitempty" jsonschema:"VM name (default: a generated one)"`
	Image          string   `json:"image,omitempty" jsonschema:"image name (default: the default image)"`
	Kernel         string   `json:"kernel,omitempty" jsonschema:"kernel name (default: the default kernel)"`
	CPUs           int      `json:"cpus,omitempty" jsonschema:"virtual CPUs"`
	MemoryMiB      int      `json:"memory_mib,omitempty" jsonschema:"memory in MiB (the operator's [mcp] max_memory caps it)"`
	DiskGiB        int      `json:"disk_gib,omitempty" jsonschema:"root disk size in GiB"`
	Network        string   `json:"network,omitempty" jsonschema:"isolated (default) or shared"`
	Command        []string `json:"command" jsonschema:"argv of the command, e.g. [\"uname\",\"-a\"]"`
	Env            []string `json:"env,omitempty" jsonschema:"environment as K=V"`
	Workdir        string   `json:"workdir,omitempty" jsonschema:"working directory in the guest (absolute)"`
	Stdin          string   `json:"stdin,omitempty" jsonschema:"text given to the command's stdin (at most 1 MiB)"`
	TimeoutSeconds int      `json:"timeout_seconds,omitempty" jsonschema:"end the command after this many seconds (the operator's [mcp] default_timeout is the default and the most)"`
	Workspace      string   `json:"workspace,omitempty" jsonschema:"a host directory or file copied into the VM before the command runs"`
	WorkspaceDest  string   `json:"workspace_dest,omitempty" jsonschema:"guest directory the workspace is copied into (default /root); the command runs in the copy"`
	Keep           bool     `json:"keep,omitempty" jsonschema:"keep the VM afterwards (default: remove it)"`
	From           string   `json:"from,omitempty" jsonschema:"restore the VM from this snapshot or template instead of booting it (about a second); the VM has the snapshot's shape"`
	Template       string   `json:"template,omitempty" jsonschema:"restore the VM from this template (like from, but it must be a template)"`
}

func (in RunInput) spec() VMSpec {
	return VMSpec{Name: in.Name, Image: in.Image, Kernel: in.Kernel, CPUs: in.CPUs, MemoryMiB: in.MemoryMiB, DiskGiB: in.DiskGiB, Network: in.Network}
}

func (in RunInput) command() Command {
	return Command{Command: in.Command, Env: in.Env, Workdir: in.Workdir, Stdin: in.Stdin, TimeoutSeconds: in.TimeoutSeconds}
}

// RunOutput is vm_run's result.
type RunOutput struct {
	VM              VMInfo `json:"vm"`
	ExitCode        int    `json:"exit_code" jsonschema:"the command's exit code"`
	Stdout          string `json:"stdout" jsonschema:"standard output (first 1 MiB)"`
	Stderr          string `json:"stderr" jsonschema:"standard error (first 1 MiB)"`
	StdoutTruncated bool   `json:"stdout_truncated,omitempty"`
	StderrTruncated bool   `json:"stderr_truncated,omitempty"`
	Removed         bool   `json:"removed" jsonschema:"the VM was removed afterwards"`
}

// NameInput names a VM.
type NameInput struct {
	Name string `json:"name" jsonschema:"VM name"`
}

// ExecInput is vm_exec's input.
type ExecInput struct {
	Name           string   `json:"name" jsonschema:"VM name"`
	Command        []string `json:"command" jsonschema:"argv of the command, e.g. [\"sh\",\"-c\",\"echo hi\"]"`
	Env            []string `json:"env,omitempty" jsonschema:"environment as K=V"`
	Workdir        string   `json:"workdir,omitempty" jsonschema:"working directory in the guest (absolute)"`
	Stdin          string   `json:"stdin,omitempty" jsonschema:"text given to the command's stdin (at most 1 MiB)"`
	TimeoutSeconds int      `json:"timeout_seconds,omitempty" jsonschema:"end the command after this many seconds (the operator's [mcp] default_timeout is the default and the most)"`
}

// WriteFileInput is vm_write_file's input.
type WriteFileInput struct {
	Name          string `json:"name" jsonschema:"VM name"`
	Path          string `json:"path" jsonschema:"absolute guest path of the file; its directory is created if missing"`
	Content       string `json:"content,omitempty" jsonschema:"the file's text"`
	ContentBase64 string `json:"content_base64,omitempty" jsonschema:"the file's bytes, base64 (instead of content)"`
	Mode          string `json:"mode,omitempty" jsonschema:"octal permission bits, default 0644"`
}

// WriteFileOutput is vm_write_file's result.
type WriteFileOutput struct {
	Path  string `json:"path"`
	Bytes int    `json:"bytes"`
}

// ReadFileInput is vm_read_file's input.
type ReadFileInput struct {
	Name string `json:"name" jsonschema:"VM name"`
	Path string `json:"path" jsonschema:"absolute guest path of a regular file"`
}

// ReadFileOutput is vm_read_file's result.
type ReadFileOutput struct {
	Path          string `json:"path"`
	Bytes         int64  `json:"bytes"`
	Content       string `json:"content,omitempty" jsonschema:"the file's text, when it is UTF-8"`
	ContentBase64 string `json:"content_base64,omitempty" jsonschema:"the file's bytes, base64, when it is not UTF-8"`
}

// PortsOutput is vm_ports's result.
type PortsOutput struct {
	Ports []api.Port `json:"ports"`
}

// ForwardInput is vm_forward's input.
type ForwardInput struct {
	Name      string `json:"name" jsonschema:"VM name"`
	GuestPort int    `json:"guest_port" jsonschema:"TCP port on the guest's loopback"`
	HostPort  int    `json:"host_port,omitempty" jsonschema:"port on the host's 127.0.0.1 (default: any free port)"`
}

// ForwardOutput is vm_forward's result.
type ForwardOutput struct {
	HostAddress string `json:"host_address" jsonschema:"connect here (127.0.0.1:PORT); the forward lives as long as this MCP server"`
	VM          string `json:"vm"`
	GuestPort   int    `json:"guest_port"`
}

// ListOutput is vm_list's result.
type ListOutput struct {
	VMs []VMInfo `json:"vms"`
}

// RemoveInput is vm_remove's input.
type RemoveInput struct {
	Name  string `json:"name" jsonschema:"VM name"`
	Force bool   `json:"force,omitempty" jsonschema:"remove even when running (default true)"`
}

// Done is the result of tools that return nothing else.
type Done struct {
	OK bool `json:"ok"`
}

func (s *Server) register() {
	m := s.mcp
	mcp.AddTool(m, &mcp.Tool{Name: "vm_run", Description: "Create a fresh VM (or restore one from a snapshot or template with from/template), optionally copy a host workspace into it, run a command, return its stdout, stderr and exit code, and remove the VM unless keep is set. Sends progress notifications while the VM boots."}, s.vmRun)
	mcp.AddTool(m, &mcp.Tool{Name: "vm_create", Description: "Create and start a VM; returns once its guest agent answers. Sends progress notifications while it boots."}, s.vmCreate)
	mcp.AddTool(m, &mcp.Tool{Name: "vm_exec", Description: "Run a command in a running VM through its guest agent (timeout, working directory, environment, stdin); returns stdout, stderr (first 1 MiB each) and the exit code."}, s.vmExec)
	mcp.AddTool(m, &mcp.Tool{Name: "vm_write_file", Description: "Write a file (at most 1 MiB) into a running VM."}, s.vmWriteFile)
	mcp.AddTool(m, &mcp.Tool{Name: "vm_read_file", Description: "Read a regular file (at most 1 MiB) from a running VM."}, s.vmReadFile)
	mcp.AddTool(m, &mcp.Tool{Name: "vm_ports", Description: "List the listening sockets in a running VM, with their process."}, s.vmPorts)
	mcp.AddTool(m, &mcp.Tool{Name: "vm_forward", Description: "Forward a port on the host's 127.0.0.1 to a TCP port in a VM, for as long as this MCP server runs."}, s.vmForward)
	mcp.AddTool(m, &mcp.Tool{Name: "vm_list", Description: "List VMs with their state, image, size and address."}, s.vmList)
	mcp.AddTool(m, &mcp.Tool{Name: "vm_remove", Description: "Remove a VM and its disk."}, s.vmRemove)
	mcp.AddTool(m, &mcp.Tool{Name: "vm_suspend", Description: "Suspend a running VM: its memory and device state go to disk (checksummed) and the VMM exits."}, s.vmSuspend)
	mcp.AddTool(m, &mcp.Tool{Name: "vm_resume", Description: "Resume a suspended VM with the same processes and boot_id."}, s.vmResume)
	m.AddResourceTemplate(&mcp.ResourceTemplate{Name: "console", Title: "VM serial console",
		Description: "The last 64 KiB of a VM's serial console log.", MIMEType: "text/plain",
		URITemplate: "banger://vm/{name}/console"}, s.console)
	s.registerSnapshots()
}

func (s *Server) create(ctx context.Context, req *mcp.CallToolRequest, spec VMSpec) (model.VM, error) {
	p, err := spec.params()
	if err != nil {
		return model.VM{}, err
	}
	var vm model.VM
	vm, err = rpc.Invoke(ctx, s.c, api.MethodVMCreate, p, rpc.CallOptions{OnEvent: progressFunc(ctx, req)})
	if err != nil {
		return model.VM{}, fmt.Errorf("create vm: %w", err)
	}
	return vm, nil
}

func (s *Server) vmCreate(ctx context.Context, req *mcp.CallToolRequest, in VMSpec) (*mcp.CallToolResult, VMInfo, error) {
	vm, err := s.create(ctx, req, in)
	if err != nil {
		return nil, VMInfo{}, err
	}
	return nil, info(vm), nil
}

func (s *Server) vmRun(ctx context.Context, req *mcp.CallToolRequest, in RunInput) (*mcp.CallToolResult, RunOutput, error) {
	var out RunOutput
	o, err := in.command().opts()
	if err != nil {
		return nil, out, err
	}
	var local string
	dest := in.WorkspaceDest
	if in.Workspace != "" {
		if local, err = filepath.Abs(in.Workspace); err != nil {
			return nil, out, fmt.Errorf("workspace %q: %w", in.Workspace, err)
		}
		if _, err := os.Lstat(local); err != nil {
			return nil, out, fmt.Errorf("workspace: %w", err)
		}
		if dest == "" {
			dest = "/root"
		}
		if !path.IsAbs(dest) {
			return nil, out, fmt.Errorf("workspace_dest %q must be an absolute guest path", dest)
		}
	} else if dest != "" {
		return nil, out, errors.New("workspace_dest given without workspace")
	}
	from, err := s.restoreSource(ctx, in)
	if err != nil {
		return nil, out, err
	}
	var vm model.VM
	if from != "" {
		res, err := s.fork(ctx, req, api.VMFork{From: from, Name: in.Name, Count: 1})
		if err != nil {
			return nil, out, err
		}
		if len(res.VMs) != 1 {
			return nil, out, fmt.Errorf("fork from %q made %d vms, want 1", from, len(res.VMs))
		}
		vm = res.VMs[0]
	} else if vm, err = s.create(ctx, req, in.spec()); err != nil {
		return nil, out, err
	}
	out.VM = info(vm)
	runErr := func() error {
		if local != "" {
			cp := api.VMCopy{Name: vm.Name, Direction: api.CopyIn, Local: local, Guest: dest}
			if _, err := rpc.Invoke(ctx, s.c, api.MethodVMCopy, cp); err != nil {
				return fmt.Errorf("copy workspace into vm %q: %w", vm.Name, err)
			}
			if o.dir == "" {
				o.dir = path.Join(dest, filepath.Base(local))
			}
		}
		res, err := s.exec(ctx, vm.Name, o)
		out.ExitCode, out.Stdout, out.Stderr = res.ExitCode, res.Stdout, res.Stderr
		out.StdoutTruncated, out.StderrTruncated = res.StdoutTruncated, res.StderrTruncated
		return err
	}()
	if !in.Keep {
		// Remove even when the command failed or the client gave up.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if _, err := rpc.Invoke(rctx, s.c, api.MethodVMRemove, api.VMRemove{Name: vm.Name, Force: true}); err != nil {
			return nil, out, errors.Join(runErr, fmt.Errorf("remove vm %q: %w", vm.Name, err))
		}
		out.Removed = true
	}
	if runErr != nil {
		return nil, out, runErr
	}
	return nil, out, nil
}

func (s *Server) vmExec(ctx context.Context, _ *mcp.CallToolRequest, in ExecInput) (*mcp.CallToolResult, execResult, error) {
	o, err := Command{Command: in.Command, Env: in.Env, Workdir: in.Workdir, Stdin: in.Stdin, TimeoutSeconds: in.TimeoutSeconds}.opts()
	if err != nil {
		return nil, execResult{}, err
	}
	if in.Name == "" {
		return nil, execResult{}, errors.New("name is empty: give the VM's name (vm_list shows them)")
	}
	res, err := s.exec(ctx, in.Name, o)
	return nil, res, err
}

// guestFile checks a guest file path: absolute, clean, not a directory.
func guestFile(p string) (dir, base string, err error) {
	if !path.IsAbs(p) {
		return "", "", fmt.Errorf("path %q must be an absolute guest path", p)
	}
	if p == "/" {
		return "", "", fmt.Errorf("path %q names no file", p)
	}
	if path.Clean(p) != p {
		return "", "", fmt.Errorf("path %q is not clean (no //, /./, /../ or trailing /): write %q", p, path.Clean(p))
	}
	dir, base = path.Split(p)
	return path.Clean(dir), base, nil
}

func (s *Server) vmWriteFile(ctx context.Context, _ *mcp.CallToolRequest, in WriteFileInput) (*mcp.CallToolResult, WriteFileOutput, error) {
	var out WriteFileOutput
	dir, base, err := guestFile(in.Path)
	if err != nil {
		return nil, out, err
	}
	data := []byte(in.Content)
	if in.ContentBase64 != "" {
		if in.Content != "" {
			return nil, out, errors.New("give content or content_base64, not both")
		}
		if data, err = base64.StdEncoding.DecodeString(in.ContentBase64); err != nil {
			return nil, out, fmt.Errorf("content_base64: %w", err)
		}
	}
	if int64(len(data)) > s.maxFile {
		return nil, out, fmt.Errorf("content is %d bytes, above the %d byte limit of vm_write_file", len(data), s.maxFile)
	}
	mode := fs.FileMode(0o644)
	if in.Mode != "" {
		m, err := strconv.ParseUint(in.Mode, 8, 32)
		if err != nil || m > 0o777 {
			return nil, out, fmt.Errorf("mode %q must be octal permission bits such as 0644 (no set-uid, set-gid or sticky bits)", in.Mode)
		}
		mode = fs.FileMode(m)
	}
	// The daemon copies from a host path as the owner: stage the bytes under
	// the file's name in a private directory of ours.
	tmp, err := os.MkdirTemp("", "banger-mcp-")
	if err != nil {
		return nil, out, fmt.Errorf("stage file for vm %q: %w", in.Name, err)
	}
	defer os.RemoveAll(tmp)
	local := filepath.Join(tmp, base)
	if err := os.WriteFile(local, data, 0o600); err != nil {
		return nil, out, fmt.Errorf("stage file for vm %q: %w", in.Name, err)
	}
	if err := os.Chmod(local, mode); err != nil {
		return nil, out, fmt.Errorf("stage file for vm %q: %w", in.Name, err)
	}
	cp := api.VMCopy{Name: in.Name, Direction: api.CopyIn, Local: local, Guest: dir}
	if _, err := rpc.Invoke(ctx, s.c, api.MethodVMCopy, cp); err != nil {
		return nil, out, fmt.Errorf("write %s in vm %q: %w", in.Path, in.Name, err)
	}
	return nil, WriteFileOutput{Path: in.Path, Bytes: len(data)}, nil
}

func (s *Server) vmReadFile(ctx context.Context, _ *mcp.CallToolRequest, in ReadFileInput) (*mcp.CallToolResult, ReadFileOutput, error) {
	var out ReadFileOutput
	_, base, err := guestFile(in.Path)
	if err != nil {
		return nil, out, err
	}
	tmp, err := os.MkdirTemp("", "banger-mcp-")
	if err != nil {
		return nil, out, fmt.Errorf("stage file from vm %q: %w", in.Name, err)
	}
	defer os.RemoveAll(tmp)
	// The daemon's copy out applies the guest-archive rules (no escapes, no
	// devices, copy.max_bytes); what lands here is then checked again.
	cp := api.VMCopy{Name: in.Name, Direction: api.CopyOut, Local: tmp, Guest: in.Path}
	if _, err := rpc.Invoke(ctx, s.c, api.MethodVMCopy, cp); err != nil {
		return nil, out, fmt.Errorf("read %s in vm %q: %w", in.Path, in.Name, err)
	}
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return nil, out, fmt.Errorf("open staged copy: %w", err)
	}
	defer root.Close()
	st, err := root.Lstat(base)
	if err != nil {
		return nil, out, fmt.Errorf("read %s in vm %q: the copy brought no %q: %w", in.Path, in.Name, base, err)
	}
	if !st.Mode().IsRegular() {
		return nil, out, fmt.Errorf("%s in vm %q is not a regular file (%s)", in.Path, in.Name, st.Mode().Type())
	}
	if st.Size() > s.maxFile {
		return nil, out, fmt.Errorf("%s in vm %q is %d bytes, above the %d byte limit of vm_read_file: read a part with vm_exec (head -c, tail -c)", in.Path, in.Name, st.Size(), s.maxFile)
	}
	f, err := root.Open(base)
	if err != nil {
		return nil, out, fmt.Errorf("open staged copy: %w", err)
	}
	defer f.Close()
	buf := &boundedBuffer{max: int(s.maxFile)}
	if _, err := f.WriteTo(buf); err != nil {
		return nil, out, fmt.Errorf("read staged copy: %w", err)
	}
	if buf.dropped > 0 {
		return nil, out, fmt.Errorf("%s in vm %q grew above the %d byte limit of vm_read_file", in.Path, in.Name, s.maxFile)
	}
	out = ReadFileOutput{Path: in.Path, Bytes: int64(len(buf.b))}
	if utf8.Valid(buf.b) {
		out.Content = string(buf.b)
	} else {
		out.ContentBase64 = base64.StdEncoding.EncodeToString(buf.b)
	}
	return nil, out, nil
}

func (s *Server) vmPorts(ctx context.Context, _ *mcp.CallToolRequest, in NameInput) (*mcp.CallToolResult, PortsOutput, error) {
	pl, err := rpc.Invoke(ctx, s.c, api.MethodVMPorts, api.VMPorts{Name: in.Name})
	if err != nil {
		return nil, PortsOutput{}, fmt.Errorf("list ports of vm %q: %w", in.Name, err)
	}
	if pl.Ports == nil {
		pl.Ports = []api.Port{}
	}
	return nil, PortsOutput{Ports: pl.Ports}, nil
}

func (s *Server) vmForward(ctx context.Context, _ *mcp.CallToolRequest, in ForwardInput) (*mcp.CallToolResult, ForwardOutput, error) {
	if in.GuestPort < 1 || in.GuestPort > 65535 {
		return nil, ForwardOutput{}, fmt.Errorf("guest_port %d is not within 1..65535", in.GuestPort)
	}
	if in.HostPort < 0 || in.HostPort > 65535 {
		return nil, ForwardOutput{}, fmt.Errorf("host_port %d is not within 0..65535", in.HostPort)
	}
	vm, err := rpc.Invoke(ctx, s.c, api.MethodVMGet, api.VMRef{Name: in.Name})
	if err != nil {
		return nil, ForwardOutput{}, fmt.Errorf("forward to vm %q: %w", in.Name, err)
	}
	if vm.State != model.StateRunning {
		return nil, ForwardOutput{}, fmt.Errorf("vm %q is %s, not running", vm.Name, vm.State)
	}
	if err := s.probeForward(ctx, vm.Name, in.GuestPort); err != nil {
		return nil, ForwardOutput{}, fmt.Errorf("forward to port %d of vm %q: %w", in.GuestPort, vm.Name, err)
	}
	f, err := s.startForward(vm.Name, in.GuestPort, in.HostPort)
	if err != nil {
		return nil, ForwardOutput{}, fmt.Errorf("forward to vm %q: %w", vm.Name, err)
	}
	return nil, ForwardOutput{HostAddress: f.addr, VM: vm.Name, GuestPort: in.GuestPort}, nil
}

func (s *Server) vmList(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, ListOutput, error) {
	l, err := rpc.Invoke(ctx, s.c, api.MethodVMList, api.Empty{})
	if err != nil {
		return nil, ListOutput{}, fmt.Errorf("list vms: %w", err)
	}
	out := ListOutput{VMs: make([]VMInfo, 0, len(l.VMs))}
	for _, vm := range l.VMs {
		out.VMs = append(out.VMs, info(vm))
	}
	return nil, out, nil
}

func (s *Server) vmRemove(ctx context.Context, _ *mcp.CallToolRequest, in RemoveInput) (*mcp.CallToolResult, Done, error) {
	if in.Name == "" {
		return nil, Done{}, errors.New("name is empty: give the VM's name (vm_list shows them)")
	}
	if _, err := rpc.Invoke(ctx, s.c, api.MethodVMRemove, api.VMRemove{Name: in.Name, Force: true}); err != nil {
		return nil, Done{}, fmt.Errorf("remove vm %q: %w", in.Name, err)
	}
	return nil, Done{OK: true}, nil
}

func (s *Server) vmSuspend(ctx context.Context, req *mcp.CallToolRequest, in NameInput) (*mcp.CallToolResult, VMInfo, error) {
	vm, err := rpc.Invoke(ctx, s.c, api.MethodVMSuspend, api.VMRef{Name: in.Name}, rpc.CallOptions{OnEvent: progressFunc(ctx, req)})
	if err != nil {
		return nil, VMInfo{}, fmt.Errorf("suspend vm %q: %w", in.Name, err)
	}
	return nil, info(vm), nil
}

func (s *Server) vmResume(ctx context.Context, req *mcp.CallToolRequest, in NameInput) (*mcp.CallToolResult, VMInfo, error) {
	vm, err := rpc.Invoke(ctx, s.c, api.MethodVMResume, api.VMRef{Name: in.Name}, rpc.CallOptions{OnEvent: progressFunc(ctx, req)})
	if err != nil {
		return nil, VMInfo{}, fmt.Errorf("resume vm %q: %w", in.Name, err)
	}
	return nil, info(vm), nil
}

// console serves banger://vm/NAME/console: the last 64 KiB of the log.
func (s *Server) console(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
	uri := req.Params.URI
	name, ok := strings.CutPrefix(uri, "banger://vm/")
	if ok {
		name, ok = strings.CutSuffix(name, "/console")
	}
	if !ok || name == "" || strings.Contains(name, "/") {
		return nil, mcp.ResourceNotFoundError(uri)
	}
	st, err := rpc.OpenStream(ctx, s.c, api.MethodVMLogs, api.VMLogs{Name: name})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	var tail []byte
	for {
		f, err := st.Next()
		if err != nil {
			if errors.Is(err, &api.Error{Code: api.CodeNotFound}) {
				return nil, mcp.ResourceNotFoundError(uri)
			}
			return nil, fmt.Errorf("read console of vm %q: %w", name, err)
		}
		switch f.Type {
		case rpc.FrameData:
			var b []byte
			if err := json.Unmarshal(f.Payload, &b); err != nil {
				return nil, fmt.Errorf("decode console of vm %q: %w", name, err)
			}
			tail = append(tail, b...)
			if len(tail) > maxConsoleBytes {
				tail = append(tail[:0], tail[len(tail)-maxConsoleBytes:]...)
			}
		case rpc.FrameResult:
			text := strings.ToValidUTF8(string(tail), "\uFFFD")
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, MIMEType: "text/plain", Text: text}}}, nil
		}
	}
}
