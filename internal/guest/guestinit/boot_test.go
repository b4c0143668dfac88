package guestinit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentclient"
	"github.com/bangerdev/banger/internal/guest/guestconfig"
	"github.com/bangerdev/banger/internal/initramfs"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/testutil"
)

// bootTimeout bounds a TCG boot on a loaded two-core machine.
const bootTimeout = 120 * time.Second

var (
	agentOnce sync.Once
	agentPath string
	agentErr  error
	agentDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if agentDir != "" {
		os.RemoveAll(agentDir)
	}
	os.Exit(code)
}

// buildAgent builds cmd/banger-vsock-agent statically, once per test binary.
func buildAgent(t *testing.T) string {
	t.Helper()
	agentOnce.Do(func() {
		agentDir, agentErr = os.MkdirTemp("", "banger-agent-")
		if agentErr != nil {
			return
		}
		agentPath = filepath.Join(agentDir, "banger-vsock-agent")
		cmd := exec.Command("go", "build", "-trimpath", "-o", agentPath, "github.com/bangerdev/banger/cmd/banger-vsock-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			agentErr = fmt.Errorf("go build agent: %v\n%s", err, out)
		}
	})
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agentPath
}

type vm struct {
	dir     string
	console string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// startVM boots the test kernel with a fresh initramfs, a sparse copy of the
// test image as root (vda), the config disk (vdb) and a virtio-serial agent
// port; no network device.
func startVM(t *testing.T, cfg *guestconfig.Config, corrupt func(path string), extraArgs ...string) *vm {
	t.Helper()
	testutil.RequireQEMU(t)
	testutil.Kernel(t)
	return startVMWithImage(t, testutil.Image(t), cfg, corrupt, extraArgs...)
}

// startVMWithImage is startVM with image as the root disk's source.
func startVMWithImage(t *testing.T, image string, cfg *guestconfig.Config, corrupt func(path string), extraArgs ...string) *vm {
	t.Helper()
	qemu := testutil.RequireQEMU(t)
	vmlinuz, modules := testutil.Kernel(t)
	agent := buildAgent(t)

	dir := t.TempDir()
	start := time.Now()
	initrd, _, err := initramfs.Build(context.Background(), initramfs.Inputs{AgentPath: agent, ModulesDir: modules}, filepath.Join(dir, "cache"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("initramfs built in %s", time.Since(start).Round(time.Millisecond))

	root := filepath.Join(dir, "root.ext4")
	if out, err := exec.Command("cp", "--sparse=always", "--reflink=auto", image, root).CombinedOutput(); err != nil {
		t.Fatalf("copy image: %v\n%s", err, out)
	}
	cfgDisk := filepath.Join(dir, "config.disk")
	if err := guestconfig.Write(cfgDisk, cfg); err != nil {
		t.Fatal(err)
	}
	if corrupt != nil {
		corrupt(cfgDisk)
	}
	v := &vm{dir: dir, console: filepath.Join(dir, "console.log"), exited: make(chan struct{})}
	args := []string{
		"-M", "microvm,accel=tcg,acpi=on", "-cpu", "max", "-smp", "1", "-m", "512",
		"-nodefaults", "-no-user-config", "-nographic",
		"-serial", "file:" + v.console,
		"-kernel", vmlinuz, "-initrd", initrd,
		"-append", "console=ttyS0 reboot=t panic=-1 quiet pci=off" + tscEarlyKHz(),
		"-drive", "id=root,file=" + root + ",format=raw,if=none",
		"-device", "virtio-blk-device,drive=root",
		"-drive", "id=config,file=" + cfgDisk + ",format=raw,if=none,readonly=on",
		"-device", "virtio-blk-device,drive=config",
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path=" + filepath.Join(dir, "agent.sock") + ",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name=" + cfg.Agent.PortName,
		"-no-reboot",
	}
	v.cmd = exec.Command(qemu, append(args, extraArgs...)...)
	var stderr bytes.Buffer
	v.cmd.Stderr = &stderr
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		v.waitErr = v.cmd.Wait()
		close(v.exited)
	}()
	t.Cleanup(func() {
		_ = v.cmd.Process.Kill()
		<-v.exited
		if t.Failed() {
			b, _ := os.ReadFile(v.console)
			t.Logf("qemu stderr:\n%s\nconsole:\n%s", stderr.String(), b)
		}
	})
	return v
}

// waitConsole follows the console log until a line contains want, QEMU
// exits, or the timeout passes; it returns the matching line.
func (v *vm) waitConsole(t *testing.T, want string, timeout time.Duration) (string, error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var f *os.File
	for f == nil {
		var err error
		if f, err = os.Open(v.console); err != nil && time.Now().After(deadline) {
			return "", fmt.Errorf("console log never appeared: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer f.Close()
	var buf, chunk []byte
	chunk = make([]byte, 64<<10)
	for {
		n, err := f.Read(chunk)
		buf = append(buf, chunk[:n]...)
		for {
			i := bytes.IndexByte(buf, '\n')
			if i < 0 {
				break
			}
			line := strings.TrimRight(string(buf[:i]), "\r")
			buf = buf[i+1:]
			if strings.Contains(line, want) {
				return line, nil
			}
		}
		if n > 0 {
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		select {
		case <-v.exited:
			// Drain what QEMU wrote before exiting, then give up.
			if rest, _ := io.ReadAll(f); len(rest) > 0 {
				buf = append(buf, rest...)
				buf = append(buf, '\n')
				continue
			}
			return "", fmt.Errorf("qemu exited (%v) before the console showed %q", v.waitErr, want)
		case <-time.After(25 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("console did not show %q within %s", want, timeout)
		}
	}
}

// tscEarlyKHz hands the guest the host's TSC rate: under TCG on a loaded
// host the kernel's PIT calibration can fail, and a microvm has no other
// reference clock, so the boot then hangs before init (seen here).
func tscEarlyKHz() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || mhz <= 0 {
				return ""
			}
			return fmt.Sprintf(" tsc_early_khz=%d", int(mhz*1000))
		}
	}
	return ""
}

func testConfig() *guestconfig.Config {
	return &guestconfig.Config{
		VMName:         "boot-test",
		Hostname:       "banger-boot-test",
		BootID:         fmt.Sprintf("boot-%d", time.Now().UnixNano()),
		InitMode:       model.InitFast,
		AuthorizedKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJd2K3fE9q test@banger"},
		Agent:          guestconfig.Agent{Transport: model.TransportVirtioSerial, PortName: "banger.agent"},
	}
}

func TestBootFastModeReachesReady(t *testing.T) {
	cfg := testConfig()
	v := startVM(t, cfg, nil)
	start := time.Now()
	line, err := v.waitConsole(t, "banger-init: ready", bootTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ready %s after qemu start: %s", time.Since(start).Round(time.Millisecond), line)
	if want := "boot_id=" + cfg.BootID + " "; !strings.Contains(line+" ", want) {
		t.Fatalf("ready line %q lacks %q", line, want)
	}
	if want := "hostname=" + cfg.Hostname; !strings.Contains(line, want) {
		t.Fatalf("ready line %q lacks %q (hostname not applied)", line, want)
	}
	console, _ := os.ReadFile(v.console)
	for _, step := range []string{"banger-init: load modules", "banger-init: switch root", "banger-init: start sshd", "banger-init: start agent"} {
		if !bytes.Contains(console, []byte(step)) {
			t.Errorf("console lacks step %q", step)
		}
	}
	if bytes.Contains(console, []byte("banger-init: error:")) {
		t.Errorf("console reports an error")
	}

	// The agent answers over the virtio-serial port with this boot's id.
	dialer := agentclient.NewYamuxDialer(filepath.Join(v.dir, "agent.sock"), nil)
	defer dialer.Close()
	client := agentclient.NewClient(dialer.Dial, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start = time.Now()
	h, err := client.Health(ctx)
	if err != nil {
		t.Fatalf("agent health over virtio-serial: %v", err)
	}
	if h.BootID != cfg.BootID || h.UptimeSeconds <= 0 {
		t.Fatalf("agent health %+v, want boot id %s", h, cfg.BootID)
	}
	t.Logf("agent health answered in %s: %+v", time.Since(start).Round(time.Millisecond), h)

	// Power-off through the agent: PID 1 gets SIGTERM, stops sshd and the
	// agent, syncs and powers off, and QEMU (-no-reboot) exits on its own.
	start = time.Now()
	if err := client.Poweroff(ctx); err != nil {
		t.Fatalf("agent poweroff: %v", err)
	}
	if _, err := v.waitConsole(t, "banger-init: power off", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v.exited:
		t.Logf("qemu exited %s after the power-off request", time.Since(start).Round(time.Millisecond))
	case <-time.After(60 * time.Second):
		t.Fatal("qemu still running 60s after the power-off request")
	}
}

func TestBootBadConfigPowersOff(t *testing.T) {
	cfg := testConfig()
	v := startVM(t, cfg, func(path string) {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		// Flip a payload byte: the header's sha256 no longer matches.
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, guestconfig.HeaderSize+2); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0x01
		if _, err := f.WriteAt(b, guestconfig.HeaderSize+2); err != nil {
			t.Fatal(err)
		}
	})
	start := time.Now()
	line, err := v.waitConsole(t, "banger-init: error:", bootTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line, "read config") || !strings.Contains(line, "sha256") {
		t.Fatalf("error line %q should name the read config step and the hash mismatch", line)
	}
	select {
	case <-v.exited:
		t.Logf("error shown and qemu exited on its own %s after start: %s", time.Since(start).Round(time.Millisecond), line)
	case <-time.After(30 * time.Second):
		t.Fatal("qemu did not exit after the failed boot (no power-off)")
	}
	console, _ := os.ReadFile(v.console)
	if bytes.Contains(console, []byte("banger-init: ready")) {
		t.Fatal("a boot with a corrupt config reported ready")
	}
}

func TestBootFastModeNetwork(t *testing.T) {
	testutil.RequireQEMU(t)
	testutil.Kernel(t)
	testutil.Image(t)
	if !testutil.InNetNS(t) {
		return
	}
	for _, c := range [][]string{
		{"link", "add", "br0", "type", "bridge"},
		{"addr", "add", "10.77.0.1/24", "dev", "br0"},
		{"link", "set", "br0", "up"},
		{"tuntap", "add", "tap0", "mode", "tap"},
		{"link", "set", "tap0", "master", "br0"},
		{"link", "set", "tap0", "up"},
	} {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", c, err, out)
		}
	}
	cfg := testConfig()
	cfg.Network = &guestconfig.Network{
		Address: netip.MustParsePrefix("10.77.0.2/24"),
		Gateway: netip.MustParseAddr("10.77.0.1"),
		DNS:     []netip.Addr{netip.MustParseAddr("10.77.0.1")},
		MAC:     "52:54:00:77:00:02",
	}
	v := startVM(t, cfg, nil,
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-device", "virtio-net-device,netdev=n0,mac="+cfg.Network.MAC)
	start := time.Now()
	if _, err := v.waitConsole(t, "banger-init: ready", bootTimeout); err != nil {
		t.Fatal(err)
	}
	// sshd answers on the configured address: the NIC got the address, is up.
	deadline := time.Now().Add(60 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", "10.77.0.2:22", 2*time.Second)
		if err == nil {
			banner := make([]byte, 64)
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, _ := conn.Read(banner)
			conn.Close()
			if !strings.HasPrefix(string(banner[:n]), "SSH-2.0-") {
				t.Fatalf("10.77.0.2:22 answered %q, not an SSH banner", banner[:n])
			}
			t.Logf("guest sshd answered on 10.77.0.2 %s after qemu start", time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest sshd unreachable on 10.77.0.2:22: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
