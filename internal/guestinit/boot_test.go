package guestinit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/guestconfig"
	"github.com/bangerdev/banger/internal/initramfs"
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
func startVM(t *testing.T, cfg *guestconfig.Config, corrupt func(path string)) *vm {
	t.Helper()
	qemu := testutil.RequireQEMU(t)
	vmlinuz, modules := testutil.Kernel(t)
	image := testutil.Image(t)
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
	v.cmd = exec.Command(qemu,
		"-M", "microvm,accel=tcg,acpi=on", "-cpu", "max", "-smp", "1", "-m", "512",
		"-nodefaults", "-no-user-config", "-nographic",
		"-serial", "file:"+v.console,
		"-kernel", vmlinuz, "-initrd", initrd,
		"-append", "console=ttyS0 reboot=t panic=-1 quiet pci=off",
		"-drive", "id=root,file="+root+",format=raw,if=none",
		"-device", "virtio-blk-device,drive=root",
		"-drive", "id=config,file="+cfgDisk+",format=raw,if=none,readonly=on",
		"-device", "virtio-blk-device,drive=config",
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path="+filepath.Join(dir, "agent.sock")+",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name="+cfg.Agent.PortName,
		"-no-reboot",
	)
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

func testConfig() *guestconfig.Config {
	return &guestconfig.Config{
		VMName:         "boot-test",
		Hostname:       "banger-boot-test",
		BootID:         fmt.Sprintf("boot-%d", time.Now().UnixNano()),
		InitMode:       guestconfig.InitFast,
		AuthorizedKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJd2K3fE9q test@banger"},
		Agent:          guestconfig.Agent{Transport: guestconfig.TransportVirtioSerial, PortName: "banger.agent"},
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
