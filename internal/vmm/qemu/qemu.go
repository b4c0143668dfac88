// Package qemu drives QEMU's microvm machine. It is banger's driver for
// hosts where KVM cannot run a standard kernel (PVM, or no KVM at all): it
// then runs under TCG software emulation. The agent channel is a
// virtio-serial port multiplexed by yamux: it needs nothing of the host's
// kernel. (A vhost-vsock channel was removed: it needs /dev/vhost-vsock,
// which banger's development and CI hosts lack, so it could not be tested.)
package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/kvmprobe"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/virtiofs"
	"github.com/bangerdev/banger/internal/vmm"
)

var (
	_ vmm.Driver      = (*Driver)(nil)
	_ vmm.Snapshotter = (*Driver)(nil)
)

// Step names of the boot chain, for EditSteps and error messages.
const (
	StepValidate    = "validate"
	StepPrepare     = "prepare-files"
	StepShares      = "virtiofsd"
	StepSpawn       = "spawn"
	StepWaitQMP     = "wait-qmp"
	StepCheckStatus = "check-status"
)

// Config configures the driver.
type Config struct {
	Binary string // default: qemu-system-x86_64 on PATH
	// Accel is kvmprobe's verdict: "kvm" only where KVM really runs a
	// standard kernel, else "tcg".
	Accel  string
	Logger *slog.Logger
	// StartTimeout bounds how long QEMU may take to open its QMP socket
	// (default 30s: two shared cores under TCG are slow).
	StartTimeout time.Duration
	// StopTimeout bounds each forced stage of Stop (quit, then SIGKILL).
	StopTimeout time.Duration
	// HostTSCkHz reports the host's constant TSC rate in kHz (0: unknown).
	// Under TCG the guest reads the host's TSC, and the guest kernel's PIT
	// calibration of it fails on a loaded host, after which it hangs
	// before init (seen here); telling it the rate (tsc_early_khz) avoids
	// that. Default: /proc/cpuinfo.
	HostTSCkHz func() int
	// Virtiofs runs one virtiofsd per shared directory (Spec.Shares).
	Virtiofs virtiofs.Config
	// EditSteps may change the boot chain (tests, future features).
	EditSteps func(vmm.Steps[*Boot]) vmm.Steps[*Boot]
}

// Driver is the QEMU microvm driver.
type Driver struct {
	cfg Config
	log *slog.Logger
}

// New returns a driver; zero Config fields take their defaults.
func New(cfg Config) *Driver {
	if cfg.Binary == "" {
		cfg.Binary = "qemu-system-x86_64"
	}
	if cfg.Accel == "" {
		cfg.Accel = kvmprobe.AccelTCG
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 15 * time.Second
	}
	if cfg.HostTSCkHz == nil {
		cfg.HostTSCkHz = hostTSCkHz
	}
	return &Driver{cfg: cfg, log: cfg.Logger}
}

// Name is "qemu".
func (d *Driver) Name() model.VMMKind { return model.VMMQEMU }

// Capabilities of QEMU microvm.
func (d *Driver) Capabilities() vmm.Capabilities {
	return vmm.Capabilities{AgentTransport: model.TransportVirtioSerial, SupportsSnapshots: true, TapFile: true, SharedDirs: true}
}

// Available checks that the QEMU binary can be found.
func (d *Driver) Available(ctx context.Context) error {
	if _, err := exec.LookPath(d.cfg.Binary); err != nil {
		return fmt.Errorf("%w: %s not found: %v", vmm.ErrUnavailable, d.cfg.Binary, err)
	}
	return nil
}

var (
	idRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
	// A virtio-serial port name lands in a QEMU option: no commas or spaces.
	portRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
)

// maxSocketPath is sun_path's size less its NUL.
const maxSocketPath = 107

// Validate checks spec without side effects.
func (d *Driver) Validate(spec vmm.Spec) error {
	bad := vmm.Invalid
	if !idRe.MatchString(spec.ID) {
		return bad("vm id %q must be 1-64 letters, digits, '-' or '_'", spec.ID)
	}
	if err := vmm.ValidateShared(spec); err != nil {
		return err
	}
	if p := d.paths(spec); len(p.QMP) > maxSocketPath || len(p.Agent) > maxSocketPath {
		return bad("vm dir %q is too long for unix sockets", spec.Dir)
	}
	if err := vmm.RegularFile(spec.Kernel.Path); err != nil {
		return bad("kernel: %v", err)
	}
	seen := map[string]bool{}
	for i, disk := range spec.Disks {
		if !idRe.MatchString(disk.ID) || seen[disk.ID] || disk.ID == "agent" || disk.ID == "con" {
			return bad("disk %d: id %q must be unique letters, digits, '-' or '_'", i, disk.ID)
		}
		seen[disk.ID] = true
		if err := vmm.RegularFile(disk.Path); err != nil {
			return bad("disk %q: %v", disk.ID, err)
		}
	}
	if m := spec.Memory; m != nil {
		if len(spec.Shares) > 0 {
			return bad("file-backed memory and shared directories cannot be combined")
		}
		if !filepath.IsAbs(m.Path) {
			return bad("memory file %q is not an absolute path", m.Path)
		}
		if !m.Shared {
			if err := vmm.RegularFile(m.Path); err != nil {
				return bad("memory file: %v", err)
			}
		}
	}
	tags := map[string]bool{}
	for i, sh := range spec.Shares {
		if !virtiofs.ValidTag(sh.Tag) || tags[sh.Tag] {
			return bad("share %d: tag %q must be unique, 1-36 lower-case letters, digits, '-' or '_'", i, sh.Tag)
		}
		tags[sh.Tag] = true
		if !filepath.IsAbs(sh.Source) || filepath.Clean(sh.Source) != sh.Source {
			return bad("share %q: source %q is not a clean absolute path", sh.Tag, sh.Source)
		}
		if len(d.paths(spec).share(sh.Tag)) > maxSocketPath {
			return bad("vm dir %q is too long for unix sockets", spec.Dir)
		}
	}
	if spec.CPUs < 1 || spec.CPUs > 64 {
		return bad("cpus %d: want 1-64", spec.CPUs)
	}
	if spec.MemoryMiB < 64 || spec.MemoryMiB > 1<<20 {
		return bad("memory %d MiB: want 64 MiB to 1 TiB", spec.MemoryMiB)
	}
	if _, err := d.AgentEndpoint(spec); err != nil {
		return err
	}
	if d.cfg.Accel != kvmprobe.AccelKVM && d.cfg.Accel != kvmprobe.AccelTCG {
		return bad("accel %q: want kvm or tcg", d.cfg.Accel)
	}
	return nil
}

// AgentEndpoint says how the host reaches the agent: the virtio-serial
// port's unix socket, multiplexed by yamux.
func (d *Driver) AgentEndpoint(spec vmm.Spec) (vmm.AgentEndpoint, error) {
	if spec.Agent.Transport != model.TransportVirtioSerial {
		return vmm.AgentEndpoint{}, fmt.Errorf("%w: agent transport %q: the qemu driver offers only %s (vhost-vsock is not supported)",
			vmm.ErrInvalidSpec, spec.Agent.Transport, model.TransportVirtioSerial)
	}
	if !portRe.MatchString(spec.Agent.PortName) {
		return vmm.AgentEndpoint{}, fmt.Errorf("%w: agent port name %q", vmm.ErrInvalidSpec, spec.Agent.PortName)
	}
	return vmm.AgentEndpoint{Kind: vmm.AgentVirtioSerialYamux, SocketPath: d.paths(spec).Agent}, nil
}

func (d *Driver) paths(spec vmm.Spec) Paths {
	con := spec.ConsoleLog
	if con == "" {
		con = filepath.Join(spec.Dir, "console.log")
	}
	return Paths{
		QMP:        filepath.Join(spec.Dir, "qmp.sock"),
		Agent:      filepath.Join(spec.Dir, "agent.sock"),
		ConsoleLog: con,
		StderrLog:  filepath.Join(spec.Dir, "qemu.log"),
		Dir:        spec.Dir,
	}
}

// Boot is the state the boot chain works on.
type Boot struct {
	Spec     vmm.Spec
	Paths    Paths
	Agent    vmm.AgentEndpoint
	Args     []string // QEMU arguments; steps may append before spawn
	Helpers  []vmm.Helper
	Proc     *vmm.Process
	Instance vmm.Instance
}

// Steps is the default boot chain.
func (d *Driver) Steps() vmm.Steps[*Boot] {
	return vmm.Steps[*Boot]{
		{Name: StepValidate, Fn: d.stepValidate},
		{Name: StepPrepare, Fn: d.stepPrepare},
		{Name: StepShares, Fn: d.stepShares},
		{Name: StepSpawn, Fn: d.stepSpawn},
		{Name: StepWaitQMP, Fn: d.stepWaitQMP},
		{Name: StepCheckStatus, Fn: d.stepCheckStatus},
	}
}

// Start boots spec. ctx bounds the start-up only; the VM keeps running after
// it ends, and after this daemon exits.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
	return d.start(ctx, spec, d.Steps())
}

func (d *Driver) start(ctx context.Context, spec vmm.Spec, steps vmm.Steps[*Boot]) (vmm.Instance, error) {
	if d.cfg.EditSteps != nil {
		steps = d.cfg.EditSteps(steps)
	}
	b := &Boot{Spec: spec}
	var undo vmm.Undo
	log := d.log.With("vm", spec.Name, "vm_id", spec.ID, "vmm", model.VMMQEMU)
	begin := time.Now()
	if err := steps.Run(ctx, log, b, &undo); err != nil {
		return vmm.Instance{}, fmt.Errorf("start vm %q with qemu: %w", spec.Name, err)
	}
	undo.Discard()
	log.InfoContext(ctx, "vm started", "pid", b.Instance.PID, "accel", b.Instance.Accel, "took", time.Since(begin).Round(time.Millisecond))
	return b.Instance, nil
}

func (d *Driver) stepValidate(ctx context.Context, b *Boot, _ *vmm.Undo) error {
	if err := d.Available(ctx); err != nil {
		return err
	}
	return d.Validate(b.Spec)
}

// stepPrepare clears stale sockets of a dead VMM (refusing live ones) and
// creates the logs, undoing only what it created.
func (d *Driver) stepPrepare(ctx context.Context, b *Boot, undo *vmm.Undo) error {
	b.Paths = d.paths(b.Spec)
	agent, err := d.AgentEndpoint(b.Spec)
	if err != nil {
		return err
	}
	b.Agent = agent
	for _, sock := range []string{b.Paths.QMP, b.Paths.Agent} {
		if _, err := os.Lstat(sock); err != nil {
			continue
		}
		if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			c.Close()
			return fmt.Errorf("socket %s is in use: is vm %q already running?", sock, b.Spec.Name)
		}
		if err := os.Remove(sock); err != nil {
			return fmt.Errorf("remove stale socket: %w", err)
		}
	}
	for _, f := range []string{b.Paths.ConsoleLog, b.Paths.StderrLog} {
		fh, err := os.OpenFile(f, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("create %s: %w", f, err)
		}
		fh.Close()
		undo.Push(func(context.Context) error { return vmm.RemoveFiles(f) })
	}
	spec := b.Spec
	if khz := d.cfg.HostTSCkHz(); d.cfg.Accel == kvmprobe.AccelTCG && khz > 0 && !strings.Contains(spec.Kernel.Cmdline, "tsc_early_khz=") {
		spec.Kernel.Cmdline = strings.TrimSpace(spec.Kernel.Cmdline + " tsc_early_khz=" + strconv.Itoa(khz))
	}
	b.Args = Args(spec, b.Paths, d.cfg.Accel)
	return nil
}

func (d *Driver) stepSpawn(ctx context.Context, b *Boot, undo *vmm.Undo) error {
	bin, err := exec.LookPath(d.cfg.Binary)
	if err != nil {
		return fmt.Errorf("find qemu: %w", err)
	}
	d.log.DebugContext(ctx, "spawn qemu", "vm", b.Spec.Name, "args", strings.Join(b.Args, " "))
	p, err := vmm.StartDetached(vmm.Command{Path: bin, Args: b.Args, LogPath: b.Paths.StderrLog, ExtraFiles: ExtraFiles(b.Spec)})
	if err != nil {
		return err
	}
	b.Proc = p
	// Sockets first in the list so the undo removes them after the kill.
	undo.Push(func(context.Context) error { return vmm.RemoveFiles(b.Paths.QMP, b.Paths.Agent) })
	undo.Push(func(ctx context.Context) error {
		err := vmm.KillAndWait(ctx, p.PID, p.StartTime, d.cfg.StopTimeout)
		select {
		case <-p.Exited():
		case <-time.After(d.cfg.StopTimeout):
			err = errors.Join(err, fmt.Errorf("qemu %d not reaped after %s", p.PID, d.cfg.StopTimeout))
		}
		return err
	})
	b.Instance = vmm.Instance{
		Driver:        model.VMMQEMU,
		ID:            b.Spec.ID,
		PID:           p.PID,
		PIDStartTime:  p.StartTime,
		ControlSocket: b.Paths.QMP,
		Agent:         b.Agent,
		ConsoleLog:    b.Paths.ConsoleLog,
		Accel:         d.cfg.Accel,
		Files:         []string{b.Paths.QMP, b.Paths.Agent},
		Helpers:       b.Helpers,
	}
	for _, sh := range b.Spec.Shares {
		b.Instance.Files = append(b.Instance.Files, b.Paths.share(sh.Tag))
	}
	return nil
}

// stepShares starts one virtiofsd per share, before QEMU, which connects
// to their sockets as it starts.
func (d *Driver) stepShares(ctx context.Context, b *Boot, undo *vmm.Undo) error {
	for _, sh := range b.Spec.Shares {
		sock := b.Paths.share(sh.Tag)
		p, err := virtiofs.Start(ctx, d.cfg.Virtiofs, virtiofs.Share{Tag: sh.Tag, Source: sh.Source, ReadOnly: sh.ReadOnly},
			sock, filepath.Join(b.Spec.Dir, "virtiofsd-"+sh.Tag+".log"))
		if err != nil {
			return fmt.Errorf("share %s as %q: %w", sh.Source, sh.Tag, err)
		}
		undo.Push(func(ctx context.Context) error {
			return errors.Join(vmm.KillAndWait(ctx, p.PID, p.StartTime, d.cfg.StopTimeout), vmm.RemoveFiles(sock))
		})
		b.Helpers = append(b.Helpers, vmm.Helper{Name: "virtiofsd:" + sh.Tag, PID: p.PID, PIDStartTime: p.StartTime})
	}
	return nil
}

// exitedEarly describes a QEMU that died during start-up, with its own
// output and the console's last lines.
func (d *Driver) exitedEarly(b *Boot) error {
	stderr, _ := vmm.TailFile(b.Paths.StderrLog, 20)
	con, _ := vmm.TailFile(b.Paths.ConsoleLog, 20)
	return fmt.Errorf("qemu exited during start-up (%v)\nqemu output:\n%s\nconsole:\n%s", b.Proc.ExitErr(), indent(stderr), indent(con))
}

func indent(s string) string {
	if s == "" {
		return "  (empty)"
	}
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// stepWaitQMP waits for the QMP socket to answer, or QEMU to die, bounded by
// StartTimeout and ctx. QEMU creates the socket early in its start-up.
func (d *Driver) stepWaitQMP(ctx context.Context, b *Boot, _ *vmm.Undo) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StartTimeout)
	defer cancel()
	err := b.Proc.WaitSocket(ctx, b.Paths.QMP, func(ctx context.Context) error {
		dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
		defer dcancel()
		q, err := DialQMP(dctx, b.Paths.QMP)
		if err == nil {
			q.Close()
		}
		return err
	})
	switch {
	case errors.Is(err, vmm.ErrExited):
		return d.exitedEarly(b)
	case err != nil:
		stderr, _ := vmm.TailFile(b.Paths.StderrLog, 20)
		return fmt.Errorf("qmp socket %s not answering: %w\nqemu output:\n%s", b.Paths.QMP, err, indent(stderr))
	}
	return nil
}

func (d *Driver) stepCheckStatus(ctx context.Context, b *Boot, _ *vmm.Undo) error {
	st, err := d.status(ctx, b.Paths.QMP)
	if err != nil {
		select {
		case <-b.Proc.Exited():
			return d.exitedEarly(b)
		default:
		}
		return err
	}
	if !st.Running {
		return fmt.Errorf("vm is %q, not running", st.Status)
	}
	return nil
}

func (d *Driver) status(ctx context.Context, qmpPath string) (Status, error) {
	q, err := DialQMP(ctx, qmpPath)
	if err != nil {
		return Status{}, err
	}
	defer q.Close()
	return q.QueryStatus(ctx)
}

// Alive reports whether the instance's QEMU still runs.
func (d *Driver) Alive(inst vmm.Instance) (bool, string) {
	return vmm.ProcessAlive(inst.PID, inst.PIDStartTime)
}

// Adopt verifies a persisted instance after a daemon restart: the recorded
// process (pid and start time) lives and its QMP socket answers.
func (d *Driver) Adopt(ctx context.Context, inst vmm.Instance) error {
	if ok, reason := d.Alive(inst); !ok {
		return fmt.Errorf("adopt vm %q: %w: %s", inst.ID, vmm.ErrNotRunning, reason)
	}
	st, err := d.status(ctx, inst.ControlSocket)
	if err != nil {
		return fmt.Errorf("adopt vm %q: qmp does not answer: %w", inst.ID, err)
	}
	for _, h := range inst.Helpers {
		// The VM runs on; its share answers with errors until it restarts.
		if ok, why := vmm.ProcessAlive(h.PID, h.PIDStartTime); !ok {
			d.log.WarnContext(ctx, "vm adopted without its share server: restart it to get the share back", "vm_id", inst.ID, "helper", h.Name, "reason", why)
		}
	}
	d.log.InfoContext(ctx, "vm adopted", "vm_id", inst.ID, "pid", inst.PID, "status", st.Status)
	return nil
}

// Stop ends the VM. Graceful: ACPI power-down, then up to timeout for the
// guest to power off. Then (or at once) QMP quit, then SIGKILL; each stage
// waits for the process event-driven, bounded by StopTimeout.
func (d *Driver) Stop(ctx context.Context, inst vmm.Instance, graceful bool, timeout time.Duration) error {
	log := d.log.With("vm_id", inst.ID, "pid", inst.PID)
	gone := func(limit time.Duration) bool {
		return vmm.WaitGone(ctx, inst.PID, inst.PIDStartTime, limit) == nil
	}
	if ok, _ := d.Alive(inst); !ok {
		return d.cleanup(inst)
	}
	if graceful {
		if err := d.command(ctx, inst, "system_powerdown"); err != nil {
			log.WarnContext(ctx, "acpi power-down failed", "err", err)
		} else if gone(timeout) {
			log.InfoContext(ctx, "vm powered off")
			return d.cleanup(inst)
		}
		log.InfoContext(ctx, "vm did not power off in time; quitting qemu", "timeout", timeout)
	}
	if err := d.quit(ctx, inst); err != nil {
		log.WarnContext(ctx, "qmp quit failed", "err", err)
	} else if gone(d.cfg.StopTimeout) {
		return d.cleanup(inst)
	}
	log.WarnContext(ctx, "qemu still running; killing it")
	if err := vmm.KillAndWait(ctx, inst.PID, inst.PIDStartTime, d.cfg.StopTimeout); err != nil {
		return fmt.Errorf("stop vm %q: %w", inst.ID, err)
	}
	return d.cleanup(inst)
}

// Kill ends the VM at once.
func (d *Driver) Kill(ctx context.Context, inst vmm.Instance) error {
	if err := vmm.KillAndWait(ctx, inst.PID, inst.PIDStartTime, d.cfg.StopTimeout); err != nil {
		return fmt.Errorf("kill vm %q: %w", inst.ID, err)
	}
	return d.cleanup(inst)
}

func (d *Driver) command(ctx context.Context, inst vmm.Instance, cmd string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	q, err := DialQMP(ctx, inst.ControlSocket)
	if err != nil {
		return err
	}
	defer q.Close()
	return q.Execute(ctx, cmd, nil, nil)
}

func (d *Driver) quit(ctx context.Context, inst vmm.Instance) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	q, err := DialQMP(ctx, inst.ControlSocket)
	if err != nil {
		return err
	}
	defer q.Close()
	return q.Quit(ctx)
}

// cleanup ends the helpers of a VMM that is gone (virtiofsd exits by
// itself once QEMU hangs up; this covers one that did not) and removes the
// sockets (QEMU leaves them).
func (d *Driver) cleanup(inst vmm.Instance) error {
	var errs []error
	for _, h := range inst.Helpers {
		if err := vmm.KillAndWait(context.Background(), h.PID, h.PIDStartTime, d.cfg.StopTimeout); err != nil {
			errs = append(errs, fmt.Errorf("end %s: %w", h.Name, err))
		}
	}
	if err := vmm.RemoveFiles(inst.Files...); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up after vm %q: %w", inst.ID, err)
	}
	return nil
}

// ConsolePath is the serial console log.
func (d *Driver) ConsolePath(inst vmm.Instance) string { return inst.ConsoleLog }

// TailConsole returns the console's last lines.
func (d *Driver) TailConsole(inst vmm.Instance, lines int) (string, error) {
	return vmm.TailFile(inst.ConsoleLog, lines)
}

// hostTSCkHz reads the TSC rate from /proc/cpuinfo ("cpu MHz"), trusting it
// only when the TSC is constant (then it is the TSC's rate).
func hostTSCkHz() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return parseTSCkHz(string(b))
}

func parseTSCkHz(cpuinfo string) int {
	constant, khz := false, 0
	for _, line := range strings.Split(cpuinfo, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "flags":
			constant = slices.Contains(strings.Fields(v), "constant_tsc")
		case "cpu MHz":
			if mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && khz == 0 {
				khz = int(mhz * 1000)
			}
		}
		if line == "" && khz != 0 {
			break // first processor block is enough
		}
	}
	if !constant {
		return 0
	}
	return khz
}
