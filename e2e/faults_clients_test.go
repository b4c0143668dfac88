package e2e

// Clients killed mid-stream: a banger client SIGKILLed in the middle of
// vm exec, vm cp, vm logs -f and vm forward must leave nothing behind in
// the daemon (goroutines, descriptors, agent streams) nor in the guest
// (the exec'd process).

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
)

func daemonResources(t *testing.T, in *instance) api.ProcessResources {
	t.Helper()
	st, err := rpc.Invoke(context.Background(), in.client(), api.MethodDaemonStatus, api.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Resources == nil {
		t.Fatalf("daemon status carries no resource counts: %+v", st)
	}
	return *st.Resources
}

// TestFaultClientKilledMidStream: after each client is killed mid-stream
// the daemon's goroutines and descriptors are back to what they were
// before within a few seconds, and an exec'd guest process is gone.
func TestFaultClientKilledMidStream(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	okWithin(t, in, 5*time.Minute, "vm", "create", "--start", "--name", "cl", "--memory", "384M")
	// A file large enough that copying it out takes a while under TCG.
	in.ok("banger", "vm", "exec", "cl", "--", "sh", "-c", "head -c 67108864 /dev/zero > /root/big")
	// Each path once, so what the daemon keeps (the agent connection) is
	// in the baseline.
	in.ok("banger", "vm", "exec", "cl", "--", "true")
	in.ok("banger", "vm", "cp", "cl:/etc/hostname", t.TempDir())
	in.ok("banger", "vm", "logs", "cl")

	settle := func() api.ProcessResources {
		prev := daemonResources(t, in)
		for i := 0; i < 12; i++ {
			time.Sleep(250 * time.Millisecond)
			cur := daemonResources(t, in)
			if cur == prev {
				return cur
			}
			prev = cur
		}
		return prev
	}
	base := settle()
	t.Logf("daemon before: %d goroutines, %d fds", base.Goroutines, base.FDs)

	cpDir := t.TempDir()
	cases := []struct {
		name  string
		args  []string
		ready func(t *testing.T, lines <-chan string)
	}{
		{"exec", []string{"vm", "exec", "cl", "--", "sh", "-c", "echo started; exec sleep 600"}, func(t *testing.T, lines <-chan string) {
			nextLine(t, lines, 60*time.Second, func(l string) bool { return l == "started" })
		}},
		{"logs -f", []string{"vm", "logs", "-f", "cl"}, func(t *testing.T, lines <-chan string) {
			nextLine(t, lines, 60*time.Second, func(string) bool { return true })
		}},
		{"cp", []string{"vm", "cp", "cl:/root/big", cpDir}, func(t *testing.T, _ <-chan string) {
			waitFor(t, 60*time.Second, "vm cp wrote its first bytes", func() (bool, string) {
				var n int64
				filepath.Walk(cpDir, func(_ string, fi os.FileInfo, err error) error {
					if err == nil && fi.Mode().IsRegular() {
						n += fi.Size()
					}
					return nil
				})
				return n > 0, ""
			})
		}},
		{"forward", []string{"vm", "forward", "cl", "22:0"}, func(t *testing.T, lines <-chan string) {
			l := nextLine(t, lines, 60*time.Second, func(l string) bool { return strings.HasPrefix(l, "forwarding 127.0.0.1:") })
			// A live connection through the forward: the guest's sshd banner.
			c, err := net.DialTimeout("tcp", strings.Fields(l)[1], 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if banner, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(banner, "SSH-") {
				t.Fatalf("through the forward: %q, %v", banner, err)
			}
		}},
	}
	for _, c := range cases {
		cmd := exec.Command(filepath.Join(binDir, "banger"), c.args...)
		cmd.Env = in.env()
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		lines := make(chan string, 64)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				select {
				case lines <- sc.Text():
				default: // logs -f may print more than anyone reads
				}
			}
		}()
		go func() { cmd.Wait(); close(exited) }()
		c.ready(t, lines)
		select {
		case <-exited:
			t.Fatalf("%s: the client ended before it could be killed mid-stream", c.name)
		default:
		}
		mid := daemonResources(t, in)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-exited
		start := time.Now()
		var now api.ProcessResources
		for {
			now = daemonResources(t, in)
			if now.Goroutines <= base.Goroutines && now.FDs <= base.FDs {
				break
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("%s: 10 s after the client was killed the daemon holds %d goroutines and %d fds, %d and %d before (%d and %d mid-stream)",
					c.name, now.Goroutines, now.FDs, base.Goroutines, base.FDs, mid.Goroutines, mid.FDs)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("%s: mid-stream %d goroutines, %d fds; back to %d, %d in %s", c.name, mid.Goroutines, mid.FDs, now.Goroutines, now.FDs, time.Since(start).Round(10*time.Millisecond))
		if c.name == "exec" {
			waitFor(t, 10*time.Second, "the killed exec's guest process ended", func() (bool, string) {
				out := in.ok("banger", "vm", "exec", "cl", "--", "sh", "-c", `for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = sleep ] && echo $p; done; true`)
				return strings.TrimSpace(out) == "", out
			})
		}
	}
	// The VM serves as before.
	in.ok("banger", "vm", "exec", "cl", "--", "true")
}
