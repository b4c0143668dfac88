package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentclient"
	"github.com/bangerdev/banger/internal/guest/guestconfig"
	"github.com/bangerdev/banger/internal/initramfs"
	"github.com/bangerdev/banger/internal/kvmprobe"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/testutil"
	"github.com/bangerdev/banger/internal/vmdisk"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/qemu"
)

// BenchmarkVMRunVsBareQEMU compares `banger vm run --rm -- true`, start to
// exit as a whole process, with a bare qemu-system-x86_64 -M microvm boot of
// the same kernel, initramfs and image (disk copy and config disk included)
// to the same readiness point (the guest agent answers), alternating.
func BenchmarkVMRunVsBareQEMU(b *testing.B) {
	if os.Getenv(testutil.EnvInNetNS) != "1" {
		b.Skip("run inside a network namespace: scripts/bench.sh does (unshare -n)")
	}
	in := vmInstance(b)
	kernel, modules := testutil.Kernel(b)
	image := testutil.Image(b)
	initrd, _, err := initramfs.Build(context.Background(), initramfs.Inputs{AgentPath: filepath.Join(binDir, "banger-vsock-agent"), ModulesDir: modules}, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	accel := kvmprobe.Prober{}.Probe().Accel
	var bangerT, bareT []time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		in.ok("banger", "vm", "run", "--rm", "--cpus", "2", "--memory", "1G", "--", "true")
		bangerT = append(bangerT, time.Since(start))
		bareT = append(bareT, bareBoot(b, accel, kernel, initrd, image))
	}
	bm, qm := percentile(bangerT, 50), percentile(bareT, 50)
	b.ReportMetric(float64(bm.Milliseconds()), "banger-median-ms")
	b.ReportMetric(float64(qm.Milliseconds()), "bare-qemu-median-ms")
	b.ReportMetric(float64(bm)/float64(qm), "banger/bare")
}

// bareBoot boots one VM with qemu directly and returns the time until the
// agent answered.
func bareBoot(b *testing.B, accel, kernel, initrd, image string) time.Duration {
	dir, err := os.MkdirTemp("", "bare-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	start := time.Now()
	root := filepath.Join(dir, "root.ext4")
	if _, err := vmdisk.Clone(image, root); err != nil {
		b.Fatal(err)
	}
	cfg := &guestconfig.Config{VMName: "bare", Hostname: "bare", BootID: "00000000-0000-4000-8000-000000000001",
		InitMode: model.InitFast, Agent: guestconfig.Agent{Transport: model.TransportVirtioSerial, PortName: "banger.agent"}}
	cfgDisk := filepath.Join(dir, "config.img")
	if err := guestconfig.Write(cfgDisk, cfg); err != nil {
		b.Fatal(err)
	}
	spec := vmm.Spec{ID: "bare", Name: "bare", Dir: dir, Kernel: vmm.Kernel{Path: kernel, Cmdline: tscArg(accel)}, Initrd: initrd,
		Disks: []vmm.Disk{{ID: "root", Path: root}, {ID: "config", Path: cfgDisk, ReadOnly: true}},
		CPUs:  2, MemoryMiB: 1024, Agent: vmm.Agent{Transport: model.TransportVirtioSerial, PortName: "banger.agent"}}
	p := qemu.Paths{QMP: filepath.Join(dir, "qmp.sock"), Agent: filepath.Join(dir, "agent.sock"), ConsoleLog: filepath.Join(dir, "console.log"), StderrLog: filepath.Join(dir, "qemu.log")}
	cmd := exec.Command("qemu-system-x86_64", qemu.Args(spec, p, accel)...)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	yd := agentclient.NewYamuxDialer(p.Agent, nil)
	defer yd.Close()
	c := agentclient.NewClient(yd.Dial, nil)
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		h, err := c.Health(ctx)
		cancel()
		if err == nil && h.BootID == cfg.BootID {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatalf("bare qemu guest never answered; console:\n%s", readFile(p.ConsoleLog))
	return 0
}

// tscArg mirrors the qemu driver's TCG work-around, so both sides boot the
// same kernel command line.
func tscArg(accel string) string {
	if accel != kvmprobe.AccelTCG {
		return ""
	}
	b, _ := os.ReadFile("/proc/cpuinfo")
	s := string(b)
	if !strings.Contains(s, "constant_tsc") {
		return ""
	}
	for _, line := range strings.Split(s, "\n") {
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

// BenchmarkVMListWith20VMs times `banger vm ls --json` as a whole process
// with 20 VMs in the store (target: median under 50 ms).
func BenchmarkVMListWith20VMs(b *testing.B) {
	// Creating a VM attaches it to the bridge: only inside a private netns.
	if os.Getenv(testutil.EnvInNetNS) != "1" {
		b.Skip("run inside a network namespace: scripts/bench.sh does (unshare -n)")
	}
	in := vmInstance(b)
	for i := 0; i < 20; i++ {
		in.ok("banger", "vm", "create", "--name", fmt.Sprintf("vm%02d", i))
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		out := in.ok("banger", "vm", "ls", "--json")
		lat = append(lat, time.Since(start))
		if strings.Count(out, `"boot_id"`)+strings.Count(out, `"name"`) < 20 {
			b.Fatalf("vm ls lists fewer than 20 vms")
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(lat, 50).Microseconds())/1000, "median-ms")
}

// BenchmarkDaemonMemoryPerVM reports the daemon's resident memory growth per
// running VM (target: under 5 MiB).
func BenchmarkDaemonMemoryPerVM(b *testing.B) {
	if os.Getenv(testutil.EnvInNetNS) != "1" {
		b.Skip("run inside a network namespace: scripts/bench.sh does (unshare -n)")
	}
	in := vmInstance(b)
	const n = 3
	for i := 0; i < b.N; i++ {
		pid := ReadPidOrFailB(b, in.p.PidFile())
		before := rssKiB(b, pid)
		for j := 0; j < n; j++ {
			in.ok("banger", "vm", "create", "--start", "--name", fmt.Sprintf("m%d-%d", i, j), "--cpus", "1", "--memory", "384M")
			in.ok("banger", "vm", "exec", fmt.Sprintf("m%d-%d", i, j), "--", "true")
		}
		after := rssKiB(b, pid)
		b.ReportMetric(float64(after-before)/n/1024, "MiB/vm")
		b.ReportMetric(float64(after)/1024, "daemon-rss-MiB")
		for j := 0; j < n; j++ {
			in.ok("banger", "vm", "rm", "-f", fmt.Sprintf("m%d-%d", i, j))
		}
	}
}

func rssKiB(b *testing.B, pid int) int {
	for _, line := range strings.Split(readFile(fmt.Sprintf("/proc/%d/status", pid)), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	b.Fatalf("no VmRSS for pid %d", pid)
	return 0
}

// ReadPidOrFailB reads the daemon's pid file in a benchmark.
func ReadPidOrFailB(b *testing.B, path string) int {
	var pid int
	if _, err := fmt.Sscanf(readFile(path), "%d", &pid); err != nil || pid <= 0 {
		b.Fatalf("read pid file %s: %v", path, err)
	}
	return pid
}
