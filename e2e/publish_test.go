package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/testutil"
	"github.com/bangerdev/banger/internal/vmforward"
)

// guestServer is a perl (in the image's perl-base) TCP server on the given
// guest ports that answers each connection with "hello-PORT" and closes it.
// setsid -f keeps it running after the exec ends.
func guestServer(ports ...int) []string {
	var ps []string
	for _, p := range ports {
		ps = append(ps, strconv.Itoa(p))
	}
	script := `use IO::Socket::INET; use IO::Select; my $sel = IO::Select->new;
for my $p (@ARGV) { $sel->add(IO::Socket::INET->new(LocalAddr => "0.0.0.0", LocalPort => $p, Listen => 16, ReuseAddr => 1) or die "listen $p: $!") }
while (1) { for my $l ($sel->can_read) { my $c = $l->accept or next; print $c "hello-" . $l->sockport . "\n"; close $c } }`
	return append([]string{"setsid", "-f", "perl", "-e", script}, ps...)
}

// readHello connects to addr on the host and returns the first line.
func readHello(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func waitForwards(t *testing.T, in *instance, name string, n int) []model.Forward {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if vm := in.inspect(name); len(vm.Forwards) >= n {
			return vm.Forwards
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("vm %s: fewer than %d forwards after 60s: %+v", name, n, in.inspect(name).Forwards)
	return nil
}

func forwardOf(fs []model.Forward, guest int) (model.Forward, bool) {
	for _, f := range fs {
		if f.GuestPort == guest {
			return f, true
		}
	}
	return model.Forward{}, false
}

// loopbackListeners counts listening TCP sockets on 127.0.0.1 in this
// network namespace.
func loopbackListeners(t *testing.T) int {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) > 3 && strings.HasPrefix(f[1], "0100007F:") && f[3] == "0A" {
			n++
		}
	}
	return n
}

// Published ports: guest listeners become reachable on the host's
// 127.0.0.1 while the VM runs (a taken host port moves to the next free
// one and says so; a privileged guest port never gets a privileged host
// port; a guest opening many listeners gets a bounded number), are listed
// by vm inspect, and are closed once the VM is gone.
func TestPublishPorts(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	// Someone on the host already has 127.0.0.1:18082.
	squat, err := net.Listen("tcp4", "127.0.0.1:18082")
	if err != nil {
		t.Fatal(err)
	}
	defer squat.Close()

	in.ok("banger", "vm", "create", "--start", "--name", "pub", "--memory", "512M", "--publish-all", "-p", "18090:9090")
	in.ok("banger", append([]string{"vm", "exec", "pub", "--"}, guestServer(18081, 18082, 80, 9090)...)...)
	fs := waitForwards(t, in, "pub", 4)

	if f, _ := forwardOf(fs, 18081); f.Host != "127.0.0.1:18081" || f.Note != "" {
		t.Fatalf("guest 18081 forwarded as %+v, want 127.0.0.1:18081", f)
	}
	if f, _ := forwardOf(fs, 18082); f.Host != "127.0.0.1:18083" || !strings.Contains(f.Note, "18082 was taken") {
		t.Fatalf("guest 18082 (host port taken) forwarded as %+v, want 127.0.0.1:18083 with a note", f)
	}
	if f, _ := forwardOf(fs, 9090); f.Host != "127.0.0.1:18090" {
		t.Fatalf("-p 18090:9090 forwarded as %+v", f)
	}
	f80, ok := forwardOf(fs, 80)
	if !ok {
		t.Fatalf("guest port 80 not forwarded: %+v", fs)
	}
	_, p80, _ := net.SplitHostPort(f80.Host)
	if n, _ := strconv.Atoi(p80); n < 1024 {
		t.Fatalf("guest port 80 got privileged host port %s", f80.Host)
	}
	for guest, host := range map[int]string{18081: "127.0.0.1:18081", 18082: "127.0.0.1:18083", 9090: "127.0.0.1:18090", 80: f80.Host} {
		if got, err := readHello(host); err != nil || got != fmt.Sprintf("hello-%d", guest) {
			t.Fatalf("through %s: %q, %v (want hello-%d)", host, got, err, guest)
		}
	}
	if got, err := readHello("127.0.0.1:18082"); err == nil {
		t.Fatalf("the host's own listener on 18082 was answered by the guest: %q", got)
	}
	out := in.ok("banger", "vm", "inspect", "pub")
	if !strings.Contains(out, "127.0.0.1:18083 → guest port 18082 (host port 18082 was taken)") {
		t.Fatalf("vm inspect does not list the forwards:\n%s", out)
	}

	// A restarted daemon re-adopts the VM and publishes its ports again.
	in.ok("banger", "daemon", "stop")
	if c, err := net.DialTimeout("tcp", "127.0.0.1:18081", 2*time.Second); err == nil {
		c.Close()
		t.Fatal("127.0.0.1:18081 still accepts with the daemon stopped")
	}
	waitForwards(t, in, "pub", 4) // vm inspect starts the daemon again
	if got, err := readHello("127.0.0.1:18081"); err != nil || got != "hello-18081" {
		t.Fatalf("after a daemon restart: %q, %v", got, err)
	}

	// A guest opening many listeners gets at most MaxAutoForwards host
	// sockets (plus its explicit -p ones).
	before := loopbackListeners(t)
	var many []int
	for p := 20000; p < 20000+vmforward.MaxAutoForwards+36; p++ {
		many = append(many, p)
	}
	in.ok("banger", append([]string{"vm", "exec", "pub", "--"}, guestServer(many...)...)...)
	waitForwards(t, in, "pub", vmforward.MaxAutoForwards+1)
	time.Sleep(3 * time.Second) // let any excess show up
	if n := len(in.inspect("pub").Forwards); n != vmforward.MaxAutoForwards+1 {
		t.Fatalf("%d forwards, want the cap %d + 1 explicit", n, vmforward.MaxAutoForwards)
	}
	if grown := loopbackListeners(t) - before; grown > vmforward.MaxAutoForwards-3 {
		t.Fatalf("host loopback listeners grew by %d (cap %d, 3 already used)", grown, vmforward.MaxAutoForwards)
	}

	in.ok("banger", "vm", "rm", "-f", "pub")
	for _, host := range []string{"127.0.0.1:18081", "127.0.0.1:18083", "127.0.0.1:18090", f80.Host} {
		if c, err := net.DialTimeout("tcp", host, 2*time.Second); err == nil {
			c.Close()
			t.Fatalf("%s still accepts after vm rm", host)
		}
	}

	// vm run announces its published ports on stderr.
	_, stderr, code := in.run("banger", "vm", "run", "--rm", "--name", "pubrun", "--memory", "512M", "-p", "18095:7070", "--",
		"sh", "-c", "sleep 2; echo ran")
	if code != 0 || !strings.Contains(stderr, "published 127.0.0.1:18095 → guest port 7070") {
		t.Fatalf("vm run -p: exit %d, stderr:\n%s", code, stderr)
	}
}
