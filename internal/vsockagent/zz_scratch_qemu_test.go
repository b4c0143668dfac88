package vsockagent_test

// SCRATCH: deleted before the report.

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/guestconfig"
	"github.com/bangerdev/banger/internal/initramfs"
	"github.com/bangerdev/banger/internal/kvmprobe"
	"github.com/bangerdev/banger/internal/vmdisk"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/qemu"
	"github.com/bangerdev/banger/internal/vsockagent"
)

func scratchTSC() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "cpu MHz") {
			if i := strings.Index(line, ":"); i > 0 {
				if mhz, err := strconv.ParseFloat(strings.TrimSpace(line[i+1:]), 64); err == nil {
					return fmt.Sprintf("tsc_early_khz=%d", int(mhz*1000))
				}
			}
		}
	}
	return ""
}

func TestScratchQEMU(t *testing.T) {
	mode := os.Getenv("VSFIX_SCRATCH")
	if mode == "" {
		t.Skip()
	}
	dir := t.TempDir()
	agent := filepath.Join(dir, "banger-vsock-agent")
	bc := exec.Command("go", "build", "-o", agent, "../../cmd/banger-vsock-agent")
	bc.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := bc.CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	initrd, _, err := initramfs.Build(context.Background(), initramfs.Inputs{AgentPath: agent, ModulesDir: os.Getenv("BANGER_TEST_MODULES")}, dir)
	if err != nil {
		t.Fatal(err)
	}
	accel := kvmprobe.Prober{}.Probe().Accel
	runs, _ := strconv.Atoi(os.Getenv("VSFIX_RUNS"))
	if runs == 0 {
		runs = 1
	}
	for i := 0; i < runs; i++ {
		scratchBoot(t, mode, accel, initrd, filepath.Join(dir, fmt.Sprint("vm", i)))
	}
}

func scratchBoot(t *testing.T, mode, accel, initrd, dir string) {
	os.MkdirAll(dir, 0o755)
	start := time.Now()
	ts := func() string { return fmt.Sprintf("%7.3f", time.Since(start).Seconds()) }
	root := filepath.Join(dir, "root.ext4")
	if _, err := vmdisk.Clone(os.Getenv("BANGER_TEST_IMAGE"), root); err != nil {
		t.Fatal(err)
	}
	cfg := &guestconfig.Config{VMName: "bare", Hostname: "bare", BootID: "00000000-0000-4000-8000-000000000001",
		InitMode: guestconfig.InitFast, Agent: guestconfig.Agent{Transport: guestconfig.TransportVirtioSerial, PortName: "banger.agent"}}
	cfgDisk := filepath.Join(dir, "config.img")
	if err := guestconfig.Write(cfgDisk, cfg); err != nil {
		t.Fatal(err)
	}
	spec := vmm.Spec{ID: "bare", Name: "bare", Dir: dir, Kernel: vmm.Kernel{Path: os.Getenv("BANGER_TEST_KERNEL"), Cmdline: scratchTSC()}, Initrd: initrd,
		Disks: []vmm.Disk{{ID: "root", Path: root}, {ID: "config", Path: cfgDisk, ReadOnly: true}},
		CPUs:  2, MemoryMiB: 1024, Agent: vmm.Agent{Transport: vmm.TransportVirtioSerial, PortName: "banger.agent"}}
	p := qemu.Paths{QMP: filepath.Join(dir, "qmp.sock"), Agent: filepath.Join(dir, "agent.sock"), ConsoleLog: filepath.Join(dir, "console.log"), StderrLog: filepath.Join(dir, "qemu.log")}
	args := qemu.Args(spec, p, accel, false)
	tracef := filepath.Join(dir, "trace.log")
	args = append(args, "-trace", "virtio_serial_*", "-trace", "virtio_console_*", "-D", tracef, "-msg", "timestamp=on")
	cmd := exec.Command("qemu-system-x86_64", args...)
	qstart := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	// console tail
	done := make(chan struct{})
	defer close(done)
	go func() {
		var off int
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			b, _ := os.ReadFile(p.ConsoleLog)
			if len(b) > off {
				i := bytes.LastIndexByte(b[off:], '\n')
				if i >= 0 {
					for _, l := range strings.Split(string(b[off:off+i]), "\n") {
						if strings.Contains(l, "banger") || strings.Contains(l, "agent") || strings.Contains(l, "level=") {
							t.Logf("%s CONSOLE %s", ts(), l)
						}
					}
					off += i + 1
				}
			}
		}
	}()
	switch mode {
	case "raw":
		var conn net.Conn
		for time.Since(start) < 20*time.Second {
			c, err := net.Dial("unix", p.Agent)
			if err == nil {
				conn = c
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("%s HOST connected", ts())
		go func() {
			buf := make([]byte, 4096)
			for {
				n, err := conn.Read(buf)
				if n > 0 {
					t.Logf("%s HOST read %q", ts(), buf[:n])
				}
				if err != nil {
					t.Logf("%s HOST read err %v", ts(), err)
					return
				}
			}
		}()
		for i := 0; time.Since(start) < 25*time.Second; i++ {
			conn.Write([]byte(fmt.Sprintf("BANGER-AGENT-HELLO 1 samenonce%d\n", i/1000)))
			time.Sleep(250 * time.Millisecond)
		}
		conn.Close()
	case "dialer":
		lg := slog.New(slog.NewTextHandler(testWriter{t, start}, &slog.HandlerOptions{Level: slog.LevelDebug}))
		yd := vsockagent.NewYamuxDialer(p.Agent, lg)
		defer yd.Close()
		c := vsockagent.NewClient(yd.Dial, nil)
		for time.Since(start) < 60*time.Second {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			h, err := c.Health(ctx)
			cancel()
			t.Logf("%s HOST health %v err=%v", ts(), h.BootID, err)
			if err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	tb, _ := os.ReadFile(tracef)
	for _, l := range strings.Split(string(tb), "\n") {
		// pid@sec.usec:event
		if i := strings.Index(l, "@"); i >= 0 {
			if j := strings.Index(l[i:], ":"); j > 0 {
				if f, err := strconv.ParseFloat(l[i+1:i+j], 64); err == nil {
					el := time.Unix(0, int64(f*1e9)).Sub(qstart).Seconds() + qstart.Sub(start).Seconds()
					t.Logf("%7.3f QEMU %s", el, l[i+j+1:])
					continue
				}
			}
		}
		if l != "" {
			t.Logf("QEMU %s", l)
		}
	}
}

type testWriter struct {
	t     *testing.T
	start time.Time
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%7.3f HOSTLOG %s", time.Since(w.start).Seconds(), strings.TrimSpace(string(p)))
	return len(p), nil
}
