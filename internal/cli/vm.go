package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/policy"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/rpc"
)

func newVMCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vm",
		Short: "Create, run, inspect and remove microVMs",
		Example: `  banger vm run -- uname -a
  banger vm create --name dev --cpus 2 --memory 2G
  banger vm ls --json`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(newVMRunCommand(a), newVMCreateCommand(a), newVMStartCommand(a), newVMStopCommand(a),
		newVMSuspendCommand(a), newVMResumeCommand(a), newVMRestartCommand(a), newVMRmCommand(a), newVMLsCommand(a), newVMInspectCommand(a),
		newVMLogsCommand(a), newVMExecCommand(a), newVMSSHCommand(a), newVMPortsCommand(a),
		newVMForwardCommand(a), newVMCpCommand(a), newVMSessionsCommand(a),
		newVMAttachCommand(a))
	cmd.AddCommand(newVMShellCommand(a))
	cmd.AddCommand(newVMSnapshotCommand(a), newVMForkCommand(a))
	cmd.AddCommand(newVMSyncCommand(a))
	return cmd
}

// createFlags are shared by vm create and vm run.
type createFlags struct {
	name, image, kernel, vmm, memory, disk, init, network string
	cpus                                                  int
	denyEgress                                            []string
	denyPrivate                                           bool
	forwardDeny                                           []int
	pub                                                   publishFlags // vm_publish.go
	mounts                                                []string
	workspace                                             bool
	noPlan                                                bool   // vm_workspace_plan.go
	planPackages                                          string // a plain Packages file for the plan
}

func (f *createFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", "", "VM name (default: a generated adjective-noun)")
	fl.StringVar(&f.image, "image", "", "image to boot (default debian-bookworm; see banger image ls)")
	fl.StringVar(&f.kernel, "kernel", "", "kernel to boot (default debian-cloud; see banger kernel ls)")
	fl.StringVar(&f.vmm, "vmm", "auto", "VMM driver: auto, qemu or firecracker")
	fl.IntVar(&f.cpus, "cpus", 0, "virtual CPUs (default 2, at most the host's)")
	fl.StringVar(&f.memory, "memory", "", "memory, e.g. 1024 (MiB), 512M or 2G (default 1G)")
	fl.StringVar(&f.disk, "disk-size", "", "root disk size, e.g. 4G (default: the image's size, at least 2G)")
	fl.StringVar(&f.init, "init", "fast", "guest init: fast (banger's init stays PID 1) or image (the image's own init)")
	fl.StringVar(&f.network, "network", "isolated", "isolated (the VM reaches only the host and the outside) or shared (it also reaches other shared VMs)")
	fl.StringArrayVar(&f.denyEgress, "deny-egress", nil, "drop the VM's traffic to this IPv4 CIDR (repeatable; 169.254.0.0/16 is always dropped)")
	fl.BoolVar(&f.denyPrivate, "deny-private", false, "drop the VM's traffic to 10/8, 172.16/12, 192.168/16 and 100.64/10 (its own subnet stays reachable)")
	fl.IntSliceVar(&f.forwardDeny, "forward-deny", nil, "refuse vm forward to this guest port (repeatable)")
	fl.StringArrayVar(&f.mounts, "mount", nil, "share HOST_DIR[:GUEST_DIR][:ro] with the VM through virtio-fs (repeatable; QEMU only; GUEST_DIR defaults to the same path)")
	fl.BoolVar(&f.workspace, "workspace", false, "share the current directory at the same path and start vm exec/run commands there; the image gets the Debian packages banger plan finds for the project")
	fl.BoolVar(&f.noPlan, "no-plan", false, "with --workspace: boot the image as it is, without the project's planned packages")
	fl.StringVar(&f.planPackages, "plan-packages", "", "with --workspace: resolve the plan from this plain Packages file instead of the archive")
}

func (f *createFlags) params() (api.VMCreate, error) {
	p := api.VMCreate{Name: f.name, Image: f.image, Kernel: f.kernel, VMM: model.VMMKind(f.vmm), CPUs: f.cpus, InitMode: model.InitMode(f.init), Network: f.network}
	pol, err := policy.Normalize(model.VMPolicy{DenyEgress: f.denyEgress, DenyPrivate: f.denyPrivate, ForwardDeny: f.forwardDeny})
	if err != nil {
		return p, &UsageError{Err: fmt.Errorf("--deny-egress/--forward-deny: %w", err)}
	}
	p.Policy = pol
	if p.Publish, err = f.pub.parse(); err != nil {
		return p, err
	}
	if err := f.mountParams(&p); err != nil {
		return p, err
	}
	if f.memory != "" {
		b, err := parseSize(f.memory, 1<<20)
		if err != nil {
			return p, &UsageError{Err: fmt.Errorf("--memory: %w", err)}
		}
		p.MemoryMiB = int(b >> 20)
	}
	if f.disk != "" {
		b, err := parseSize(f.disk, 1<<30)
		if err != nil {
			return p, &UsageError{Err: fmt.Errorf("--disk-size: %w", err)}
		}
		p.DiskBytes = b
	}
	return p, nil
}

// parseSize reads "512M", "2G", "1.5G" or a bare number in defUnit.
func parseSize(s string, defUnit int64) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "IB"), "B")
	mult := defUnit
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult, t = 1<<10, t[:n-1]
		case 'M':
			mult, t = 1<<20, t[:n-1]
		case 'G':
			mult, t = 1<<30, t[:n-1]
		case 'T':
			mult, t = 1<<40, t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%q is not a size (examples: 512M, 2G, 1024)", s)
	}
	return int64(v * float64(mult)), nil
}

// callWithProgress runs a long call of m, drawing its progress on stderr.
func callWithProgress[Req, Resp any](ctx context.Context, a *app, m api.Method[Req, Resp], req Req) (Resp, error) {
	c, err := a.client(ctx)
	if err != nil {
		var zero Resp
		return zero, err
	}
	r := newProgressRenderer(a.env.Stderr)
	defer r.Close()
	return rpc.Invoke(ctx, c, m, req, rpc.CallOptions{OnEvent: func(ev progress.Event) { r.Handle(ev) }})
}

// call runs a short call of m.
func call[Req, Resp any](ctx context.Context, a *app, m api.Method[Req, Resp], req Req) (Resp, error) {
	c, err := a.client(ctx)
	if err != nil {
		var zero Resp
		return zero, err
	}
	return rpc.Invoke(ctx, c, m, req)
}

// mountParams turns --mount and --workspace into absolute mounts: the
// daemon does not share the client's working directory.
func (f *createFlags) mountParams(p *api.VMCreate) error {
	for _, spec := range f.mounts {
		m, err := model.ParseMount(spec)
		if err != nil {
			return &UsageError{Err: fmt.Errorf("--mount: %w", err)}
		}
		if m.Source, err = filepath.Abs(m.Source); err != nil {
			return fmt.Errorf("--mount %s: %w", spec, err)
		}
		if m.Target == "" {
			m.Target = m.Source
		}
		p.Mounts = append(p.Mounts, m)
	}
	if f.workspace {
		wd, err := os.Getwd()
		if err != nil {
			return fmt.Errorf("--workspace: find the current directory: %w", err)
		}
		p.Mounts = append(p.Mounts, model.Mount{Source: wd, Target: wd})
		p.Workdir = wd
	}
	return nil
}
