// Package guestinit is the guest's PID 1 (banger-vsock-agent as /init in the
// initramfs): it loads modules, finds the config and root disks, switches
// root, applies the VM's identity and network, starts sshd and the agent
// server, and then stays PID 1, reaping zombies until asked to shut down.
//
// Every step is announced on the console as "banger-init: <step>"; any
// failure prints "banger-init: error: <step>: <err>" and powers the VM off,
// so a broken boot ends the VMM process instead of hanging.
package guestinit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/guest/guestconfig"
	"github.com/bangerdev/banger/internal/model"
)

// Options configure PID 1.
type Options struct {
	Version string
	// Console receives the step lines and logs; default os.Stdout, which the
	// kernel opened on /dev/console.
	Console io.Writer
	// Watchdog bounds the whole boot up to "ready" (default 90s under TCG).
	Watchdog time.Duration
}

// Paths inside the guest.
const (
	newRoot          = "/newroot"
	modulesOrderFile = "/etc/banger/modules.order" // written by internal/initramfs
	imageAgentPath   = "/usr/local/lib/banger/banger-vsock-agent"
	imageAgentUnit   = "/etc/systemd/system/banger-agent.service"
	imageHostKeyUnit = "/etc/systemd/system/banger-ssh-host-keys.service"
	sshdPath         = "/usr/sbin/sshd"
	guestPATH        = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

type boot struct {
	opts    Options
	console *syncWriter
	// stdio is what children write to: the console file itself, so exec
	// needs no copying goroutines (PID 1 never calls cmd.Wait).
	stdio   *os.File
	log     *slog.Logger
	started time.Time
	reaper  *reaper
	cfg     *guestconfig.Config
	disks   disks
	sys     sysfs

	mu       sync.Mutex
	children []*supervisor
}

type step struct {
	name string
	run  func(ctx context.Context) error
}

// Run is PID 1. It never returns: it ends by powering the VM off (or by
// exec'ing the image's init in image mode).
func Run(opts Options) {
	if opts.Console == nil {
		opts.Console = os.Stdout
	}
	if opts.Watchdog <= 0 {
		opts.Watchdog = 90 * time.Second
	}
	console := &syncWriter{w: opts.Console}
	b := &boot{
		opts:    opts,
		console: console,
		stdio:   os.Stdout,
		log: slog.New(slog.NewTextHandler(prefixWriter{console}, &slog.HandlerOptions{
			ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey {
					return slog.Attr{}
				}
				return a
			},
		})),
		started: time.Now(),
		reaper:  newReaper(),
		sys:     sysfs{sysRoot: "/sys", devRoot: "/dev"},
	}
	defer func() {
		if r := recover(); r != nil {
			b.fail("panic", fmt.Errorf("%v", r))
		}
	}()
	b.run()
}

func (b *boot) run() {
	os.Setenv("PATH", guestPATH)
	os.Setenv("HOME", "/root")
	// Ctrl-Alt-Del becomes SIGINT to PID 1 instead of an instant reboot.
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)

	// Signals are taken before anything can start a child.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT, unix.SIGPWR)
	go func() { // reaping never waits for the boot to finish
		for range time.Tick(time.Second) {
			b.reaper.reap() // a missed SIGCHLD must not leave zombies
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watchdog := time.AfterFunc(b.opts.Watchdog, func() {
		b.fail("watchdog", fmt.Errorf("boot not ready after %s", b.opts.Watchdog))
	})

	early := []step{
		{"mount early filesystems", b.mountEarly},
		{"load modules", b.loadModules},
		{"read config", b.readConfig},
		{"mount root", b.mountRoot},
		{"switch root", b.switchRoot},
	}
	b.runSteps(ctx, early, sigs)

	late := []step{
		{"load extra modules", b.loadExtraModules},
		{"mount shares", b.mountShares},
		{"set hostname", b.applyIdentity},
		{"configure network", b.configureNetwork},
		{"install ssh keys", func(context.Context) error { return writeAuthorizedKeys("/", b.cfg.AuthorizedKeys) }},
	}
	if b.cfg.InitMode == model.InitImage {
		late = append(late,
			step{"install agent service", b.installAgentService},
			step{"install ssh host key service", b.installHostKeyService},
			step{"exec image init", b.execImageInit},
		)
	} else {
		late = append(late,
			// The agent first: "ready" is the agent answering, and nothing
			// it needs waits on sshd.
			step{"start agent", b.startAgent},
			step{"start sshd", b.startSSHD},
		)
	}
	b.runSteps(ctx, late, sigs)
	watchdog.Stop()
	markBooted() // identity.go: a snapshot waits for it

	host, _ := os.Hostname()
	b.printf("banger-init: ready boot_id=%s hostname=%s uptime=%s", b.cfg.BootID, host, uptime())

	for sig := range sigs {
		switch sig {
		case unix.SIGCHLD:
			b.reaper.reap()
		default:
			b.printf("banger-init: %v received, shutting down", sig)
			b.shutdown(cancel)
		}
	}
}

func (b *boot) runSteps(ctx context.Context, steps []step, sigs chan os.Signal) {
	for _, s := range steps {
		b.printf("banger-init: %s", s.name)
		start := time.Now()
		if err := s.run(ctx); err != nil {
			b.fail(s.name, err)
		}
		b.log.Debug("step done", "step", s.name, "took", time.Since(start))
		// Reap between steps; the signal loop only starts after ready.
		select {
		case sig := <-sigs:
			if sig == unix.SIGCHLD {
				b.reaper.reap()
			} else {
				b.printf("banger-init: %v received during boot, shutting down", sig)
				b.shutdown(func() {})
			}
		default:
		}
	}
}

func (b *boot) printf(format string, args ...any) {
	fmt.Fprintf(b.console, format+"\n", args...)
}

// fail reports the failed step and powers off; it does not return.
func (b *boot) fail(stepName string, err error) {
	b.printf("banger-init: error: %s: %v", stepName, err)
	unix.Sync()
	powerOff()
}

func powerOff() {
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Not PID 1 or no CAP_SYS_BOOT: exiting PID 1 panics the kernel, and
	// panic=-1 with QEMU's -no-reboot ends the VM all the same.
	fmt.Fprintf(os.Stderr, "banger-init: power off failed: %v\n", err)
	os.Exit(1)
}

func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "unknown"
	}
	return f[0] + "s"
}

// --- steps ---------------------------------------------------------------

type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

func (b *boot) mountEarly(context.Context) error {
	mounts := []mount{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666"},
		{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", m.target, err)
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	// devtmpfs lacks the links udev would make; shells and sshd use them.
	for link, target := range map[string]string{
		"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2",
	} {
		if err := os.Symlink(target, link); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("link %s: %w", link, err)
		}
	}
	return nil
}

func (b *boot) loadModules(context.Context) error {
	data, err := os.ReadFile(modulesOrderFile)
	if err != nil {
		return fmt.Errorf("read %s: %w", modulesOrderFile, err)
	}
	n := 0
	for _, path := range strings.Fields(string(data)) {
		if err := loadModule(path); err != nil {
			return err
		}
		n++
	}
	b.log.Info("modules loaded", "count", n)
	return nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open module: %w", err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: %w", filepath.Base(path), err)
	}
	return nil
}

func (b *boot) readConfig(context.Context) error {
	d, err := poll(15*time.Second, 10*time.Millisecond, b.sys.findDisks)
	if err != nil {
		return err
	}
	b.disks = d
	cfg, err := guestconfig.ReadFile(d.config)
	if err != nil {
		return err
	}
	b.cfg = cfg
	b.printf("banger-init: config from %s: vm=%s mode=%s root=%s", d.config, cfg.VMName, cfg.InitMode, d.root)
	return nil
}

func (b *boot) mountRoot(context.Context) error {
	if err := os.MkdirAll(newRoot, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(b.disks.root, newRoot, "ext4", 0, ""); err != nil {
		return fmt.Errorf("mount %s (ext4) on %s: %w", b.disks.root, newRoot, err)
	}
	return nil
}

// switchRoot moves the API filesystems into the new root, frees the
// initramfs and makes the new root "/" (what switch_root does; PID 1 keeps
// running).
func (b *boot) switchRoot(context.Context) error {
	for _, m := range []string{"/dev", "/proc", "/sys", "/run"} {
		target := newRoot + m
		if err := os.MkdirAll(target, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", target, err)
		}
		if err := unix.Mount(m, target, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s to %s: %w", m, target, err)
		}
	}
	freeInitramfs()
	if err := unix.Chdir(newRoot); err != nil {
		return fmt.Errorf("chdir %s: %w", newRoot, err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move %s to /: %w", newRoot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return unix.Chdir("/")
}

// freeInitramfs deletes the unpacked initramfs (agent binary, modules) so
// its memory returns to the guest; only on the initial ramfs, never on a disk.
func freeInitramfs() {
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil || (st.Type != unix.RAMFS_MAGIC && st.Type != unix.TMPFS_MAGIC) {
		return
	}
	for _, p := range []string{"/init", "/lib", "/etc"} {
		_ = os.RemoveAll(p)
	}
}

func (b *boot) loadExtraModules(ctx context.Context) error {
	if len(b.cfg.Modules) == 0 {
		return nil
	}
	modprobe, err := exec.LookPath("modprobe")
	if err != nil {
		return fmt.Errorf("config asks for modules %v but the image has no modprobe: %w", b.cfg.Modules, err)
	}
	cmd := exec.Command(modprobe, append([]string{"-a"}, b.cfg.Modules...)...)
	cmd.Stdout, cmd.Stderr = b.stdio, b.stdio
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return b.reaper.run(ctx, cmd)
}

func (b *boot) applyIdentity(context.Context) error {
	if err := unix.Sethostname([]byte(b.cfg.Hostname)); err != nil {
		return fmt.Errorf("sethostname: %w", err)
	}
	return writeIdentity("/", b.cfg)
}

func (b *boot) configureNetwork(context.Context) error {
	return configureNetwork(b.log, b.cfg.Network)
}

func (b *boot) startSSHD(ctx context.Context) error {
	if _, err := os.Stat(sshdPath); err != nil {
		b.printf("banger-init: no %s in the image, skipping ssh", sshdPath)
		return nil
	}
	if err := b.ensureHostKeys(ctx); err != nil {
		return err
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return err
	}
	s, err := startSupervisor("sshd", b.reaper, b.log, func() *exec.Cmd {
		cmd := exec.Command(sshdPath, "-D", "-e")
		cmd.Stdout, cmd.Stderr = b.stdio, b.stdio
		return cmd
	})
	if err != nil {
		return err
	}
	b.addChild(s)
	return nil
}

// ensureHostKeys makes the SSH host keys on a VM's first boot: images ship
// without them so that every VM gets its own. An image without sshd needs
// none.
func (b *boot) ensureHostKeys(ctx context.Context) error {
	if _, err := os.Stat(sshdPath); err != nil {
		return nil
	}
	if keys, _ := filepath.Glob("/etc/ssh/ssh_host_*_key"); len(keys) > 0 {
		return nil
	}
	// ed25519 (the key banger pins) and ecdsa only: RSA generation takes
	// seconds under software emulation and would hold up every boot.
	kctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, typ := range []string{"ed25519", "ecdsa"} {
		cmd := exec.Command("ssh-keygen", "-q", "-t", typ, "-N", "", "-C", "", "-f", "/etc/ssh/ssh_host_"+typ+"_key")
		cmd.Stdout, cmd.Stderr = b.stdio, b.stdio
		if err := b.reaper.run(kctx, cmd); err != nil {
			return fmt.Errorf("generate ssh %s host key: %w", typ, err)
		}
	}
	return nil
}

// startAgent runs the agent server as a child process (this binary in
// server mode): its exec'd commands then belong to it, and PID 1 stays the
// only reaper of its own children and of orphans.
func (b *boot) startAgent(context.Context) error {
	args := AgentArgs(b.cfg, b.opts.Version)
	s, err := startSupervisor("agent", b.reaper, b.log, func() *exec.Cmd {
		cmd := exec.Command("/proc/self/exe", args...)
		cmd.Args[0] = "banger-vsock-agent"
		cmd.Stdout, cmd.Stderr = b.stdio, b.stdio
		return cmd
	})
	if err != nil {
		return err
	}
	b.addChild(s)
	return nil
}

// AgentArgs is the agent server's command line for cfg (after argv[0]).
func AgentArgs(cfg *guestconfig.Config, version string) []string {
	args := []string{"serve", "--boot-id", cfg.BootID, "--transport", string(cfg.Agent.Transport), "--init-mode", string(cfg.InitMode)}
	switch cfg.Agent.Transport {
	case model.TransportVirtioSerial:
		args = append(args, "--port-name", cfg.Agent.PortName)
	case model.TransportVsock:
		args = append(args, "--vsock-port", strconv.FormatUint(uint64(cfg.Agent.VsockPort), 10))
	}
	return args
}

func (b *boot) addChild(s *supervisor) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.children = append(b.children, s)
}

// shutdown stops the children, then every other process, syncs, remounts /
// read-only and powers off.
func (b *boot) shutdown(cancel context.CancelFunc) {
	cancel()
	b.mu.Lock()
	children := b.children
	b.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range children {
		wg.Add(1)
		go func() { defer wg.Done(); c.stop(5 * time.Second) }()
	}
	go func() { // the reaper must keep running while children exit
		for range time.Tick(50 * time.Millisecond) {
			b.reaper.reap()
		}
	}()
	wg.Wait()
	_ = unix.Kill(-1, unix.SIGTERM)
	time.Sleep(500 * time.Millisecond)
	_ = unix.Kill(-1, unix.SIGKILL)
	unix.Sync()
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		b.printf("banger-init: remount / read-only: %v", err)
	}
	unix.Sync()
	b.printf("banger-init: power off")
	powerOff()
}

// --- console -------------------------------------------------------------

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// prefixWriter marks log lines as banger-init's.
type prefixWriter struct{ w io.Writer }

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := p.w.Write(append([]byte("banger-init: "), b...)); err != nil {
		return 0, err
	}
	return len(b), nil
}
