// Package doctor checks whether this host can run banger VMs and says, for
// every problem, how to fix it on this distribution. It only looks: it never
// starts the daemon, installs anything or writes banger's state.
package doctor

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/jailer"
	"github.com/bangerdev/banger/internal/kvmprobe"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/virtiofs"
)

// Status is a check's verdict.
type Status string

const (
	OK   Status = "ok"
	Warn Status = "warn" // works, but slower, limited or needing a step first
	Fail Status = "fail" // blocks running VMs
)

// Check is one finding.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"` // what to run or do, for warn and fail
}

// Report is every check, in a fixed order.
type Report struct {
	Checks []Check `json:"checks"`
	OK     bool    `json:"ok"` // no check failed
}

// Count returns how many checks have status s.
func (r Report) Count(s Status) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == s {
			n++
		}
	}
	return n
}

// Find returns the check called name.
func (r Report) Find(name string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Check{}, false
}

// Check names, stable for --json consumers.
const (
	CheckKVM         = "kvm"
	CheckQEMU        = "qemu"
	CheckFirecracker = "firecracker"
	CheckE2fsprogs   = "e2fsprogs"
	CheckDebootstrap = "debootstrap"
	CheckNetTools    = "network tools"
	CheckDisk        = "disk space"
	CheckStore       = "store"
	CheckDaemon      = "daemon"
	CheckHelper      = "root helper"
	CheckHostNetwork = "host network"
	CheckKernels     = "kernels"
	CheckImages      = "images"
	CheckVMMCgroups  = "vmm cgroups"
)

// Disk space thresholds for the state directory.
const (
	DiskWarnBytes = 5 << 30
	DiskFailBytes = 1 << 30
)

// Config is the host as doctor sees it; every field but Paths has a real
// default, and each is a seam for tests.
type Config struct {
	Paths paths.User
	// OSRelease is the os-release file naming the distro (default /etc/os-release).
	OSRelease string
	// LookPath finds a program (default exec.LookPath, i.e. this process's PATH).
	LookPath func(name string) (string, error)
	// SbinDirs are searched when LookPath misses, to tell "not installed"
	// from "installed but not on PATH" (nil: /usr/local/sbin, /usr/sbin, /sbin).
	SbinDirs []string
	// Output runs a program and returns its combined output (default: exec
	// with a 10 s bound and LC_ALL=C).
	Output func(ctx context.Context, path string, args ...string) ([]byte, error)
	// Statfs returns the bytes available to unprivileged users on the
	// filesystem holding path (default statfs(2)).
	Statfs func(path string) (uint64, error)
	// KVM probes KVM (default kvmprobe.Prober{}.Probe: fresh, and writes no cache).
	KVM func() kvmprobe.Result
	// Geteuid is the effective uid (default os.Geteuid).
	Geteuid func() int
	// CallTimeout bounds each call to the daemon or the root helper (default 3 s).
	CallTimeout time.Duration
	Logger      *slog.Logger
	// CheckStore checks the store at path (default store.Check, in this
	// process).
	CheckStore func(ctx context.Context, path string) (store.CheckResult, error)
	// Proc is the procfs root VMM cgroups are read from (default /proc).
	Proc string
	// OwnerState marks Paths as a system install's owner state inspected
	// by root: the owner can plant symlinks there, so doctor reads none of
	// its files itself. Kernels and images then come from the daemon only,
	// and CheckStore must read the store as the owner.
	OwnerState bool
	// Virtiofsd is the virtio-fs daemon --mount runs (default
	// virtiofs.DefaultBinary); Sysctl reads /proc/sys/NAME (default: the
	// file).
	Virtiofsd string
	Sysctl    func(name string) (string, error)
	// Firecracker is the jailer's settings (config.toml [firecracker];
	// zero: defaults). KVMDevice, Mountinfo, Passwd and Group are the host
	// files the jailer check reads (defaults /dev/kvm,
	// /proc/self/mountinfo, /etc/passwd, /etc/group).
	Firecracker                         jailer.Config
	KVMDevice, Mountinfo, Passwd, Group string
}

func (c *Config) defaults() {
	if c.Virtiofsd == "" {
		c.Virtiofsd = virtiofs.DefaultBinary
	}
	if c.Sysctl == nil {
		c.Sysctl = sysctl
	}
	if c.CheckStore == nil {
		c.CheckStore = store.Check
	}
	if c.OSRelease == "" {
		c.OSRelease = "/etc/os-release"
	}
	if c.LookPath == nil {
		c.LookPath = exec.LookPath
	}
	if c.SbinDirs == nil {
		c.SbinDirs = []string{"/usr/local/sbin", "/usr/sbin", "/sbin"}
	}
	if c.Output == nil {
		c.Output = output
	}
	if c.Statfs == nil {
		c.Statfs = statfs
	}
	if c.KVM == nil {
		c.KVM = kvmprobe.Prober{}.Probe
	}
	if c.Geteuid == nil {
		c.Geteuid = os.Geteuid
	}
	if c.Proc == "" {
		c.Proc = "/proc"
	}
	if c.KVMDevice == "" {
		c.KVMDevice = "/dev/kvm"
	}
	if c.Mountinfo == "" {
		c.Mountinfo = "/proc/self/mountinfo"
	}
	if c.Passwd == "" {
		c.Passwd = "/etc/passwd"
	}
	if c.Group == "" {
		c.Group = "/etc/group"
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 3 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func output(ctx context.Context, path string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdin = nil
	return cmd.CombinedOutput()
}

func statfs(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// PathLookup returns a LookPath that searches pathEnv (a PATH value)
// instead of this process's PATH, so a caller with its own environment
// (the CLI under test) is honoured.
func PathLookup(pathEnv string) func(string) (string, error) {
	return func(name string) (string, error) {
		if strings.Contains(name, "/") {
			return exec.LookPath(name)
		}
		for _, dir := range filepath.SplitList(pathEnv) {
			if dir == "" {
				dir = "."
			}
			p := filepath.Join(dir, name)
			if isExecutable(p) {
				return p, nil
			}
		}
		return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
	}
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// Run performs every check. It does not fail: a check that cannot be
// carried out says so in its own verdict.
func Run(ctx context.Context, cfg Config) Report {
	cfg.defaults()
	r := &runner{cfg: cfg, distro: ReadDistro(cfg.OSRelease)}
	checks := []func(context.Context) Check{
		r.checkKVM,
		r.checkQEMU,
		r.checkFirecracker,
		r.checkJailer,
		r.checkE2fsprogs,
		r.checkDebootstrap,
		r.checkNetTools,
		r.checkDisk,
		r.checkStore,
		r.checkDaemon,
		r.checkHelper,
		r.checkHostNetwork,
		r.checkKernels,
		r.checkImages,
		r.checkVMMCgroups,
		r.checkVirtiofs,
	}
	rep := Report{OK: true}
	for _, check := range checks {
		c := check(ctx)
		cfg.Logger.Debug("doctor check", "name", c.Name, "status", c.Status, "detail", c.Detail)
		if c.Status == Fail {
			rep.OK = false
		}
		rep.Checks = append(rep.Checks, c)
	}
	return rep
}

// runner carries what later checks learn from earlier ones.
type runner struct {
	cfg    Config
	distro Distro

	kvm    kvmprobe.Result
	vmms   []model.VMMKind // VMM drivers that can run here
	daemon *daemonState
}

// find locates a program: on PATH, else (onPath=false) in an sbin dir.
func (r *runner) find(name string) (path string, onPath, found bool) {
	if p, err := r.cfg.LookPath(name); err == nil {
		return p, true, true
	}
	for _, d := range r.cfg.SbinDirs {
		if p := filepath.Join(d, name); isExecutable(p) {
			return p, false, true
		}
	}
	return "", false, false
}
