package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/bangerdev/banger/internal/initramfs"
	"github.com/bangerdev/banger/internal/kvmprobe"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/netattach"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/virtiofs"
	"github.com/bangerdev/banger/internal/vmlife"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/firecracker"
	"github.com/bangerdev/banger/internal/vmm/qemu"
)

// EnvAgentBin overrides where the daemon finds banger-vsock-agent.
const EnvAgentBin = "BANGER_AGENT_BIN"

// newVMManager assembles the VM lifecycle from the drivers this host can run.
func (d *Daemon) newVMManager(life context.Context) *vmlife.Manager {
	kvm, err := kvmprobe.Prober{}.Cached(filepath.Join(d.paths.Cache, "kvmprobe.json"))
	if err != nil {
		d.log.Warn("kvm probe cache", "err", err)
	}
	d.kvm = kvm
	d.log.Info("virtualization", "accel", kvm.Accel, "reason", kvm.Reason)
	qd := qemu.New(qemu.Config{Accel: kvm.Accel, Logger: d.log.With("vmm", model.VMMQEMU),
		// virtiofsd runs as this daemon's uid, inside a user namespace that
		// maps guest-root requests to it; bangerd is its wrapper.
		Virtiofs: virtiofs.Config{Launcher: d.opts.Executable, UID: os.Geteuid(), GID: os.Getegid()}})
	// Firecracker is offered everywhere; Select only picks it where its
	// binaries are installed (root-owned), KVM can run a standard kernel
	// and the jailer's needs are met. The root helper runs the jailer
	// (vm.jailer.start) and passes back the API socket.
	fd := firecracker.New(firecracker.Config{Jailer: d.cfg.Firecracker, Launcher: firecracker.NewHelperLauncher(d.helper), Logger: d.log.With("vmm", model.VMMFirecracker)})
	drivers := map[model.VMMKind]vmm.Driver{qd.Name(): qd, fd.Name(): fd}
	list := []vmm.Driver{fd, qd}
	netw, err := netattach.New(netattach.Config{
		Helper: d.helper, Store: d.store,
		// The effective ids are what the kernel reports to the helper.
		OwnerUID: os.Geteuid(), OwnerGID: os.Getegid(),
		Log: d.log.With("component", "netattach"),
	})
	var network vmlife.Network = netw
	if err != nil {
		d.log.Error("vm networking unavailable", "err", err)
		network = nil
	}
	return vmlife.New(life, vmlife.Deps{
		Events:  d.events,
		Network: network,
		Cgroups: helperCgroups{d.helper},
		Store:   d.store,
		Paths:   d.paths,
		Log:     d.log,
		Drivers: drivers,
		Select: func(ctx context.Context, pref model.VMMKind) (vmm.Driver, error) {
			return vmm.Select(ctx, pref, kvm, list...)
		},
		Initramfs:       d.initramfsFor,
		DialAgent:       d.dialAgent,
		AuthorizedKeys:  d.guestAuthorizedKeys,
		HostCPUs:        runtime.NumCPU(),
		HostMemoryMiB:   hostMemoryMiB(),
		ConsoleMaxBytes: 8 << 20,
	})
}

// initramfsFor builds (or finds cached) the guest initramfs for a kernel
// and the agent binary this daemon ships with.
func (d *Daemon) initramfsFor(ctx context.Context, k model.Kernel) (string, error) {
	agent, err := agentBinary(d.opts.Executable)
	if err != nil {
		return "", err
	}
	if k.ModulesDir == "" {
		return "", fmt.Errorf("kernel %q has no modules directory: banger's initramfs needs its virtio modules", k.Name)
	}
	in := initramfs.Inputs{AgentPath: agent, ModulesDir: k.ModulesDir}
	// The kernel store keeps the kernel's config beside it; it says which
	// initramfs compressions the kernel can unpack.
	if cfg := filepath.Join(filepath.Dir(k.Path), "config"); fileExists(cfg) {
		in.KernelConfig = cfg
	}
	path, _, err := initramfs.Build(ctx, in, d.paths.InitramfsDir())
	if err != nil {
		return "", fmt.Errorf("build initramfs for kernel %q: %w", k.Name, err)
	}
	return path, nil
}

// agentBinary finds banger-vsock-agent: $BANGER_AGENT_BIN, beside bangerd,
// or the system-install location.
func agentBinary(executable string) (string, error) {
	cands := []string{os.Getenv(EnvAgentBin)}
	if executable != "" {
		cands = append(cands, filepath.Join(filepath.Dir(executable), "banger-vsock-agent"))
	}
	cands = append(cands, paths.SystemFromEnv(os.Getenv).AgentBin())
	for _, c := range cands {
		if c == "" {
			continue
		}
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() {
			return c, nil
		}
	}
	return "", fmt.Errorf("find banger-vsock-agent: not in $%s, beside %s, nor installed (reinstall banger)", EnvAgentBin, executable)
}

func hostMemoryMiB() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.Atoi(f[1])
			return kb / 1024
		}
	}
	return 0
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}
