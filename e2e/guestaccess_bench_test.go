package e2e

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/sshkeys"
	"github.com/bangerdev/banger/internal/testutil"
)

// benchVM boots one VM in a fresh instance for a benchmark.
func benchVM(b *testing.B, name string) *instance {
	if os.Getenv(testutil.EnvInNetNS) != "1" {
		b.Skip("run inside a network namespace: scripts/bench.sh does (unshare -n)")
	}
	testutil.RequireQEMU(b)
	testutil.RequireBinary(b, "ssh")
	kernel, modules := testutil.Kernel(b)
	image := testutil.Image(b)
	in := newInstanceFromHome(b, b.TempDir())
	b.Cleanup(in.cleanup)
	b.Cleanup(func() { in.run("banger", "vm", "rm", "-f", name) })
	in.ok("banger", "kernel", "import", "debian-cloud", kernel, "--modules", modules)
	in.ok("banger", "image", "import", "debian-bookworm", image)
	// Boot under TCG on a loaded host can take longer than in.ok's 60 s;
	// a benchmark measures what comes after, so it waits longer for ready.
	if _, _, err := in.runFor(5*time.Minute, "banger", "vm", "create", "--start", "--name", name, "--memory", "512M"); err != nil {
		b.Fatalf("create the benchmark vm: %v\ndaemon log:\n%s", err, readFile(in.p.DaemonLog()))
	}
	return in
}

// BenchmarkExecVsSSH runs `true` in the same VM through the agent
// (banger vm exec) and through sshd (banger vm ssh), alternating, each as a
// whole banger process.
func BenchmarkExecVsSSH(b *testing.B) {
	in := benchVM(b, "bench")
	in.ok("banger", "vm", "ssh", "bench", "--", "true") // pin the host key first
	var execT, sshT []time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		in.ok("banger", "vm", "exec", "bench", "--", "true")
		execT = append(execT, time.Since(start))
		start = time.Now()
		in.ok("banger", "vm", "ssh", "bench", "--", "true")
		sshT = append(sshT, time.Since(start))
	}
	em, sm := percentile(execT, 50), percentile(sshT, 50)
	b.ReportMetric(float64(em.Microseconds())/1000, "exec-median-ms")
	b.ReportMetric(float64(sm.Microseconds())/1000, "ssh-median-ms")
	b.ReportMetric(float64(sm)/float64(em), "ssh/exec")
}

// BenchmarkForwardThroughput pushes 64 MiB into the guest's
// `cat > /dev/null` over SSH twice per round: once through `banger vm
// forward` (127.0.0.1 → agent channel → guest loopback) and once straight to
// the guest's address on the bridge. The image has no plain TCP sink, so
// both runs pay the same SSH encryption in the guest; the ratio compares the
// two paths carrying the same bytes, not raw socket speed.
func BenchmarkForwardThroughput(b *testing.B) {
	in := benchVM(b, "fwd")
	in.ok("banger", "vm", "ssh", "fwd", "--", "true") // pin the host key
	guestIP := in.inspect("fwd").IP
	files := sshkeys.FilesFor(in.p)

	cmd := exec.Command(filepath.Join(binDir, "banger"), "vm", "forward", "fwd", "22:0")
	cmd.Env = in.env()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGINT); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "forwarding 127.0.0.1:") {
		b.Fatalf("forward said %q, %v", line, err)
	}
	local := strings.Fields(line)[1]
	host, port, _ := strings.Cut(local, ":")

	const size = 64 << 20
	push := func(addr, port string) time.Duration {
		ssh := exec.Command("ssh", "-i", files.Key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
			"-o", "UserKnownHostsFile="+files.KnownHosts, "-o", "StrictHostKeyChecking=yes",
			"-o", "HostKeyAlias="+sshkeys.Alias("fwd"), "-o", "HostKeyAlgorithms="+sshkeys.HostKeyAlgorithm,
			"-o", "Ciphers=aes128-gcm@openssh.com", "-p", port, "root@"+addr, "cat > /dev/null")
		ssh.Stdin = io.LimitReader(zeros{}, size)
		start := time.Now()
		if o, err := ssh.CombinedOutput(); err != nil {
			b.Fatalf("ssh to %s:%s: %v %s", addr, port, err, o)
		}
		return time.Since(start)
	}
	var fwdT, directT []time.Duration
	for i := 0; i < b.N; i++ {
		fwdT = append(fwdT, push(host, port))
		directT = append(directT, push(guestIP, "22"))
	}
	fm, dm := percentile(fwdT, 50), percentile(directT, 50)
	mib := float64(size) / (1 << 20)
	b.ReportMetric(mib/fm.Seconds(), "forward-MiB/s")
	b.ReportMetric(mib/dm.Seconds(), "direct-MiB/s")
	b.ReportMetric(dm.Seconds()/fm.Seconds(), "forward/direct")
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
