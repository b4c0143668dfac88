package firecracker

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	sdk "github.com/firecracker-microvm/firecracker-go-sdk"
	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"
	"github.com/sirupsen/logrus"

	"github.com/bangerdev/banger/internal/jailer"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/vmm"
)

var _ vmm.Driver = (*Driver)(nil)

// Supported Firecracker versions: MinVersion <= v < MaxVersion.
var (
	MinVersion = Version{1, 4, 0}
	MaxVersion = Version{2, 0, 0}
)

// BaseCmdline is the kernel command line every banger guest gets.
const BaseCmdline = "console=ttyS0 reboot=k panic=1 pci=off quiet"

// In-chroot names of the API and vsock sockets.
const (
	apiSockName   = "/api.sock"
	vsockSockName = "vsock.sock"
)

// Config configures the driver.
type Config struct {
	// Jailer is the jailer's settings (config.toml [firecracker]); zero
	// fields take jailer.Default's.
	Jailer jailer.Config
	// Launcher starts the jailer; nil means DirectLauncher (this process
	// runs it, so it must be root). The owner daemon passes the root
	// helper's (NewHelperLauncher).
	Launcher Launcher
	// UID and GID are the jail identity of the direct launcher, which has
	// no reserved range to pick from.
	UID, GID     int
	KVMDevice    string // "/dev/kvm"
	Logger       *slog.Logger
	StartTimeout time.Duration // API socket must answer within this (default 10s)
	StopTimeout  time.Duration // bound on each forced stop stage (default 10s)

	// clientOpts replace the SDK client's API operations (tests).
	clientOpts []sdk.ClientOpt
	// Host files Available reads (tests point them elsewhere).
	mountinfo, passwd, group string
}

// Driver is the Firecracker driver.
type Driver struct {
	cfg      Config
	log      *slog.Logger
	launcher Launcher
}

// New returns a driver; zero Config fields take their defaults.
func New(cfg Config) *Driver {
	cfg.Jailer = cfg.Jailer.WithDefaults()
	if cfg.KVMDevice == "" {
		cfg.KVMDevice = "/dev/kvm"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.mountinfo == "" {
		cfg.mountinfo = "/proc/self/mountinfo"
	}
	if cfg.passwd == "" {
		cfg.passwd, cfg.group = "/etc/passwd", "/etc/group"
	}
	d := &Driver{cfg: cfg, log: cfg.Logger, launcher: cfg.Launcher}
	if d.launcher == nil {
		d.launcher = &DirectLauncher{d: d}
	}
	return d
}

// Name is "firecracker".
func (d *Driver) Name() model.VMMKind { return model.VMMFirecracker }

// Capabilities of Firecracker under the jailer.
func (d *Driver) Capabilities() vmm.Capabilities {
	return vmm.Capabilities{AgentTransport: model.TransportVsock, NeedsVMLinux: true, NeedsKVM: true, NeedsRootHelper: true}
}

// Version is a Firecracker release.
type Version struct{ Major, Minor, Patch int }

func (v Version) String() string { return fmt.Sprintf("v%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Less orders versions.
func (v Version) Less(o Version) bool {
	if v.Major != o.Major {
		return v.Major < o.Major
	}
	if v.Minor != o.Minor {
		return v.Minor < o.Minor
	}
	return v.Patch < o.Patch
}

var versionRe = regexp.MustCompile(`Firecracker v(\d+)\.(\d+)\.(\d+)`)

// ParseVersion reads `firecracker --version` output.
func ParseVersion(out string) (Version, error) {
	m := versionRe.FindStringSubmatch(out)
	if m == nil {
		return Version{}, fmt.Errorf("no version in %q", firstLine(out))
	}
	var v Version
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	v.Patch, _ = strconv.Atoi(m[3])
	return v, nil
}

func firstLine(s string) string {
	if i := bytes.IndexByte([]byte(s), '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Available checks what the jailer needs: both binaries (root-owned when
// root runs them), the KVM device, the host's cgroup version and a uid
// range no user or group has; then that firecracker's version is
// supported. Each failure says what to change.
func (d *Driver) Available(ctx context.Context) error {
	j := d.cfg.Jailer
	if err := j.Validate(); err != nil {
		return fmt.Errorf("%w: %v", vmm.ErrUnavailable, err)
	}
	for _, b := range []struct{ what, path string }{{"firecracker", j.FirecrackerBinary}, {"jailer", j.JailerBinary}} {
		if _, err := os.Stat(b.path); err != nil {
			return fmt.Errorf("%w: %s not installed at %s (set firecracker.%s in config.toml): %v", vmm.ErrUnavailable, b.what, b.path, map[string]string{"firecracker": "binary", "jailer": "jailer_binary"}[b.what], err)
		}
		if d.launcher.Privileged() {
			if err := jailer.CheckRootBinary(b.path); err != nil {
				return fmt.Errorf("%w: the root helper runs %s: %v", vmm.ErrUnavailable, b.what, err)
			}
		}
	}
	if st, err := os.Stat(d.cfg.KVMDevice); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return fmt.Errorf("%w: firecracker needs %s (a KVM host), which is missing here: %v", vmm.ErrUnavailable, d.cfg.KVMDevice, err)
	}
	v, err := jailer.HostCgroupVersion(d.cfg.mountinfo)
	if err != nil {
		return fmt.Errorf("%w: cgroups for the jailer: %v", vmm.ErrUnavailable, err)
	}
	if v != j.CgroupVersion {
		return fmt.Errorf("%w: this host runs cgroup v%s but firecracker.cgroup_version is %q: set it to %q", vmm.ErrUnavailable, v, j.CgroupVersion, v)
	}
	if err := j.CheckRange(d.cfg.passwd, d.cfg.group); err != nil {
		return fmt.Errorf("%w: %v", vmm.ErrUnavailable, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	bin := j.FirecrackerBinary
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return fmt.Errorf("%w: run %s --version: %v", vmm.ErrUnavailable, bin, err)
	}
	v2, err := ParseVersion(string(out))
	if err != nil {
		return fmt.Errorf("%w: %s --version: %v", vmm.ErrUnavailable, bin, err)
	}
	if v2.Less(MinVersion) || !v2.Less(MaxVersion) {
		return fmt.Errorf("%w: firecracker %s is outside the supported range %s to before %s", vmm.ErrUnavailable, v2, MinVersion, MaxVersion)
	}
	return nil
}

var (
	idRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,63}$`) // jailer ids: alphanumerics and hyphens
)

// Validate checks spec without side effects.
func (d *Driver) Validate(spec vmm.Spec) error {
	bad := vmm.Invalid
	if len(spec.Shares) > 0 {
		return bad("firecracker cannot share host directories (no virtio-fs): create the vm without --mount and copy files in with banger vm sync, or use --vmm qemu")
	}
	if !idRe.MatchString(spec.ID) {
		return bad("vm id %q must be 1-64 letters, digits or '-' (jailer rule)", spec.ID)
	}
	if err := vmm.ValidateShared(spec); err != nil {
		return err
	}
	if err := d.cfg.Jailer.Validate(); err != nil {
		return bad("%v", err)
	}
	if err := checkVMLinux(spec.Kernel.VMLinux); err != nil {
		return bad("kernel: %v", err)
	}
	if len(spec.Disks) == 0 {
		return bad("a root disk is required")
	}
	seenID, seenBase := map[string]bool{}, map[string]bool{}
	for i, disk := range spec.Disks {
		base := filepath.Base(disk.Path)
		if !idRe.MatchString(disk.ID) || seenID[disk.ID] || seenBase[base] {
			return bad("disk %d: id %q and file name %q must be unique", i, disk.ID, base)
		}
		seenID[disk.ID], seenBase[base] = true, true
		if err := vmm.RegularFile(disk.Path); err != nil {
			return bad("disk %q: %v", disk.ID, err)
		}
	}
	if spec.CPUs < 1 || spec.CPUs > 32 {
		return bad("cpus %d: want 1-32", spec.CPUs)
	}
	if spec.MemoryMiB < 64 {
		return bad("memory %d MiB: want at least 64", spec.MemoryMiB)
	}
	if _, err := d.AgentEndpoint(spec); err != nil {
		return err
	}
	return d.launcher.Validate(spec)
}

// checkVMLinux insists on an x86-64 ELF image: Firecracker cannot boot a
// compressed bzImage.
func checkVMLinux(p string) error {
	if err := vmm.RegularFile(p); err != nil {
		return fmt.Errorf("vmlinux: %w", err)
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	hdr := make([]byte, 0x210)
	n, _ := io.ReadFull(f, hdr)
	hdr = hdr[:n]
	if n >= 0x206 && string(hdr[0x202:0x206]) == "HdrS" {
		return fmt.Errorf("%s is a compressed bzImage; firecracker needs the uncompressed ELF vmlinux", p)
	}
	if n < 20 || string(hdr[:4]) != "\x7fELF" {
		return fmt.Errorf("%s is not an ELF vmlinux", p)
	}
	if hdr[4] != 2 || hdr[5] != 1 || binary.LittleEndian.Uint16(hdr[18:20]) != 62 {
		return fmt.Errorf("%s is not a 64-bit little-endian x86-64 ELF", p)
	}
	return nil
}

// AgentEndpoint: Firecracker's vsock is hybrid, a unix socket in the jail
// on which the host writes "CONNECT <port>\n".
func (d *Driver) AgentEndpoint(spec vmm.Spec) (vmm.AgentEndpoint, error) {
	if spec.Agent.Transport != model.TransportVsock {
		return vmm.AgentEndpoint{}, fmt.Errorf("%w: firecracker agent transport must be %s, not %q", vmm.ErrInvalidSpec, model.TransportVsock, spec.Agent.Transport)
	}
	if spec.Agent.VsockCID < 3 || spec.Agent.VsockPort == 0 {
		return vmm.AgentEndpoint{}, fmt.Errorf("%w: vsock cid %d (want >= 3) and port %d (want > 0)", vmm.ErrInvalidSpec, spec.Agent.VsockCID, spec.Agent.VsockPort)
	}
	ep := vmm.AgentEndpoint{Kind: vmm.AgentHybridVsock, SocketPath: filepath.Join(d.jailRoot(spec.ID), vsockSockName), CID: spec.Agent.VsockCID, Port: spec.Agent.VsockPort}
	if d.launcher.BuildsJail() {
		ep.JailID = spec.ID // the owner reaches it through the root helper
	}
	return ep, nil
}

// jailDir is <base>/<exec file name>/<id>, the jailer's layout.
func (d *Driver) jailDir(id string) string { return d.cfg.Jailer.JailDir(id) }

func (d *Driver) jailRoot(id string) string { return filepath.Join(d.jailDir(id), "root") }

// BuildConfig turns spec into the SDK's configuration, jailer included.
func (d *Driver) BuildConfig(spec vmm.Spec) sdk.Config {
	cmdline := BaseCmdline
	if spec.Kernel.Cmdline != "" {
		cmdline += " " + spec.Kernel.Cmdline
	}
	drives := make([]models.Drive, len(spec.Disks))
	for i, disk := range spec.Disks {
		drives[i] = models.Drive{
			DriveID:      sdk.String(disk.ID),
			PathOnHost:   sdk.String(disk.Path),
			IsRootDevice: sdk.Bool(i == 0),
			IsReadOnly:   sdk.Bool(disk.ReadOnly),
		}
	}
	var nics sdk.NetworkInterfaces
	if spec.Net != nil {
		nics = sdk.NetworkInterfaces{{StaticConfiguration: &sdk.StaticNetworkConfiguration{
			HostDevName: spec.Net.Tap, MacAddress: spec.Net.MAC}}}
	}
	uid, gid, numa := d.cfg.UID, d.cfg.GID, 0
	var chroot sdk.HandlersAdapter = sdk.NewNaiveChrootStrategy(spec.Kernel.VMLinux)
	if d.launcher.BuildsJail() {
		chroot = jailNames{}
	}
	return sdk.Config{
		SocketPath:        apiSockName,
		KernelImagePath:   spec.Kernel.VMLinux,
		InitrdPath:        spec.Initrd,
		KernelArgs:        cmdline,
		Drives:            drives,
		NetworkInterfaces: nics,
		VsockDevices:      []sdk.VsockDevice{{ID: "agent", Path: vsockSockName, CID: spec.Agent.VsockCID}},
		MachineCfg: models.MachineConfiguration{
			VcpuCount:  sdk.Int64(int64(spec.CPUs)),
			MemSizeMib: sdk.Int64(int64(spec.MemoryMiB)),
		},
		VMID:    spec.ID,
		Seccomp: sdk.SeccompConfig{Enabled: true},
		// Empty but not nil: nil means "forward SIGINT, SIGTERM, ..." and a
		// restarting helper would pass its own signals to every running VM.
		ForwardSignals: []os.Signal{},
		JailerCfg: &sdk.JailerConfig{
			ID:             spec.ID,
			UID:            &uid,
			GID:            &gid,
			NumaNode:       &numa,
			ExecFile:       d.cfg.Jailer.FirecrackerBinary,
			JailerBinary:   d.cfg.Jailer.JailerBinary,
			ChrootBaseDir:  d.cfg.Jailer.ChrootBase,
			CgroupVersion:  d.cfg.Jailer.CgroupVersion,
			ChrootStrategy: chroot,
			Stdout:         io.Discard,
			Stderr:         io.Discard,
		},
	}
}

// jailerArgs is the direct launcher's jailer command line (the root
// helper builds the same from its own settings).
func (d *Driver) jailerArgs(cfg sdk.Config) []string {
	j := cfg.JailerCfg
	return d.cfg.Jailer.Args(j.ID, *j.UID, *j.GID)
}

// sdkLogger bridges the SDK's logrus output to slog at debug level.
func (d *Driver) sdkLogger(vmID string) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(slogWriter{log: d.log.With("vm_id", vmID, "vmm", model.VMMFirecracker)})
	l.SetLevel(logrus.DebugLevel)
	return logrus.NewEntry(l)
}

type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Debug(string(bytes.TrimSpace(p)))
	return len(p), nil
}
