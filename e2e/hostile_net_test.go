package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/testutil"
)

// The guest is root in its VM: these tests attack the host and other VMs
// from inside a real guest with frames a static sender (testdata/hostilenet)
// crafts, and check that nothing outside the attacking VM changed. Each
// attack also checks that its frames reached the host (the tap's receive
// counter), so a sender that silently sent nothing cannot pass the test.

const hostileNetGateway = "10.213.77.1"

// hostileNetSender builds the sender static and returns its path.
func hostileNetSender(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "hostilenet")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/hostilenet")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build hostilenet: %v\n%s", err, b)
	}
	return out
}

// hostileNetVM creates and starts a VM and gives the sender to it.
func hostileNetVM(t *testing.T, in *instance, name, sender string, extra ...string) (ip, mac, tap string) {
	t.Helper()
	args := append([]string{"vm", "create", "--start", "--name", name, "--cpus", "1", "--memory", "384M"}, extra...)
	in.ok("banger", args...)
	vm := in.inspect(name)
	if sender != "" {
		in.ok("banger", "vm", "cp", sender, name+":/root")
	}
	// The guest's eth0 is the NIC banger gave it.
	if got := strings.TrimSpace(in.ok("banger", "vm", "exec", name, "--", "cat", "/sys/class/net/eth0/address")); got != vm.MAC {
		t.Fatalf("vm %s eth0 has mac %q, banger gave it %q", name, got, vm.MAC)
	}
	return vm.IP, vm.MAC, vm.Tap
}

// hostileNetRx is how many frames the host has taken in from tap.
func hostileNetRx(t *testing.T, tap string) uint64 {
	t.Helper()
	l, err := netlink.LinkByName(tap)
	if err != nil {
		t.Fatalf("tap %s: %v", tap, err)
	}
	s := l.Attrs().Statistics
	if s == nil {
		t.Fatalf("tap %s has no statistics", tap)
	}
	return s.RxPackets
}

// hostileNetAttack runs the sender in vm and checks at least min frames
// from it reached the host.
func hostileNetAttack(t *testing.T, in *instance, vm, tap string, min uint64, args ...string) {
	t.Helper()
	before := hostileNetRx(t, tap)
	in.ok("banger", append([]string{"vm", "exec", vm, "--", "/root/hostilenet"}, args...)...)
	var after uint64
	waitFor(t, 5*time.Second, "the attack's frames reach the host", func() (bool, string) {
		after = hostileNetRx(t, tap)
		return after-before >= min, fmt.Sprintf("%d frames", after-before)
	})
}

func hostileNetCmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// hostileNetNeigh is the host's neighbour entry for ip on the bridge.
func hostileNetNeigh(t *testing.T, ip string) string {
	t.Helper()
	return strings.TrimSpace(hostileNetCmd(t, "ip", "-4", "neigh", "show", ip, "dev", "banger0"))
}

func hostileNetSSHOpen(t *testing.T, in *instance, vm string) {
	t.Helper()
	// The guest's init starts sshd; wait for it (bounded) rather than race
	// it with a second one.
	in.ok("banger", "vm", "exec", vm, "--", "sh", "-c",
		"i=0; while [ $i -lt 80 ]; do test -s /run/sshd.pid && exit 0; sleep 0.5; i=$((i+1)); done; echo no sshd >&2; exit 1")
}

// hostileNetReach reports whether from opens a TCP connection to ip:22.
func hostileNetReach(in *instance, from, ip string) (bool, string) {
	out, errOut, code := in.run("banger", "vm", "exec", from, "--", "bash", "-c",
		"timeout 6 bash -c 'exec 3<>/dev/tcp/"+ip+"/22 && head -c 7 <&3'")
	return code == 0 && strings.HasPrefix(out, "SSH-2.0"), fmt.Sprintf("exit %d %q %q", code, out, errOut)
}

func TestHostileNetGuestAttacks(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	testutil.RequireBinary(t, "ip")
	sender := hostileNetSender(t)
	in := vmInstance(t)
	route6Before := hostileNetCmd(t, "ip", "-6", "route", "show", "table", "all")
	addr6Before := hostileNetCmd(t, "ip", "-6", "addr")

	aIP, aMAC, aTap := hostileNetVM(t, in, "attacker", sender)
	bIP, bMAC, _ := hostileNetVM(t, in, "victim", sender)
	br, err := netlink.LinkByName("banger0")
	if err != nil {
		t.Fatal(err)
	}
	gwMAC := br.Attrs().HardwareAddr.String()

	t.Run("router advertisement", func(t *testing.T) {
		hostileNetAttack(t, in, "attacker", aTap, 1, "ra", "eth0")
		time.Sleep(time.Second) // the kernel handles an RA at once; leave it time anyway
		// What this RA would make: a default route via the guest and an
		// address in its prefix.
		for _, args := range [][]string{{"-6", "route", "show", "table", "all"}, {"-6", "addr"}} {
			out := hostileNetCmd(t, "ip", args...)
			if strings.Contains(out, "default") || strings.Contains(out, "2001:db8:bad") || strings.Contains(out, "fe80::bad:1") {
				t.Errorf("ip %v shows the guest's router advertisement took effect:\n%s", args, out)
			}
		}
		if got := hostileNetCmd(t, "ip", "-6", "route", "show", "table", "all"); got != route6Before {
			t.Errorf("ip -6 route changed after a guest's router advertisement:\nbefore:\n%s\nafter:\n%s", route6Before, got)
		}
		if got := hostileNetCmd(t, "ip", "-6", "addr"); got != addr6Before {
			t.Errorf("ip -6 addr changed after a guest's router advertisement:\nbefore:\n%s\nafter:\n%s", addr6Before, got)
		}
	})

	t.Run("arp spoofing", func(t *testing.T) {
		// The host learns the victim's MAC, the victim the gateway's.
		hostileNetSSHOpen(t, in, "victim")
		if c, err := net.DialTimeout("tcp4", net.JoinHostPort(bIP, "22"), 10*time.Second); err != nil {
			t.Fatalf("host to victim: %v", err)
		} else {
			c.Close()
		}
		in.ok("banger", "vm", "exec", "victim", "--", "sh", "-c", "getent hosts attacker.banger >/dev/null; true")
		hostNeigh := hostileNetNeigh(t, bIP)
		if !strings.Contains(hostNeigh, bMAC) {
			t.Fatalf("host neighbour entry for the victim %q lacks its mac %s", hostNeigh, bMAC)
		}
		victimNeigh := func() string {
			return strings.TrimSpace(in.ok("banger", "vm", "exec", "victim", "--", "ip", "-4", "neigh", "show", hostileNetGateway, "dev", "eth0"))
		}
		if got := victimNeigh(); !strings.Contains(got, gwMAC) {
			t.Fatalf("victim's neighbour entry for the gateway %q lacks the bridge mac %s", got, gwMAC)
		}
		time.Sleep(1500 * time.Millisecond) // past the neighbour tables' lock time

		// The attacker claims the victim's address and the gateway's,
		// with its own MAC and with the victim's (a forged sender MAC).
		hostileNetAttack(t, in, "attacker", aTap, 6, "arp", "eth0", bIP)
		hostileNetAttack(t, in, "attacker", aTap, 6, "arp", "eth0", hostileNetGateway)
		hostileNetAttack(t, in, "attacker", aTap, 6, "arp", "eth0", hostileNetGateway, bMAC)
		time.Sleep(time.Second)

		if got := hostileNetNeigh(t, bIP); strings.Contains(got, aMAC) || !strings.Contains(got, bMAC) {
			t.Errorf("host neighbour entry for the victim became %q (was %q; attacker mac %s)", got, hostNeigh, aMAC)
		}
		if got := hostileNetNeigh(t, hostileNetGateway); got != "" {
			t.Errorf("host has a neighbour entry for its own address: %q", got)
		}
		if got := victimNeigh(); strings.Contains(got, aMAC) || !strings.Contains(got, gwMAC) {
			t.Errorf("victim's neighbour entry for the gateway became %q (bridge mac %s, attacker mac %s)", got, gwMAC, aMAC)
		}
	})

	t.Run("forged ipv4 source", func(t *testing.T) {
		pc, err := net.ListenPacket("udp4", net.JoinHostPort(hostileNetGateway, "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		port := fmt.Sprint(pc.LocalAddr().(*net.UDPAddr).Port)
		hostileNetAttack(t, in, "attacker", aTap, 1, "udp", bIP, hostileNetGateway, port, "forged-victim")
		hostileNetAttack(t, in, "attacker", aTap, 1, "udp", "10.213.77.250", hostileNetGateway, port, "forged-unleased")
		// Positive control: the same sender with the attacker's own address.
		hostileNetAttack(t, in, "attacker", aTap, 1, "udp", aIP, hostileNetGateway, port, "legit")
		var got []string
		buf := make([]byte, 256)
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) && len(got) < 3 {
			_ = pc.SetReadDeadline(time.Now().Add(time.Second))
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				if len(got) > 0 {
					break
				}
				continue
			}
			got = append(got, string(buf[:n])+" from "+from.(*net.UDPAddr).IP.String())
		}
		if want := "legit from " + aIP; strings.Join(got, "|") != want {
			t.Errorf("host received %q, want only %q", got, want)
		}
	})

	t.Run("isolation", func(t *testing.T) {
		hostileNetSSHOpen(t, in, "victim")
		if ok, last := hostileNetReach(in, "attacker", bIP); ok {
			t.Errorf("isolated attacker reached the isolated victim's sshd: %s", last)
		}
		// Nor around it, routed through the host: the attacker sends to the
		// victim through the gateway; the victim listens (positive control:
		// the host's own datagram to it arrives).
		in.ok("banger", "vm", "exec", "attacker", "--", "ip", "route", "replace", bIP+"/32", "via", hostileNetGateway, "dev", "eth0")
		listener := exec.Command(filepath.Join(binDir, "banger"), "vm", "exec", "victim", "--", "/root/hostilenet", "listen", "4444", "10")
		listener.Env = in.env()
		stdout, err := listener.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := listener.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 16)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		select {
		case l := <-lines:
			if l != "ready" {
				t.Fatalf("victim's listener said %q", l)
			}
		case <-time.After(30 * time.Second):
			_ = listener.Process.Kill()
			t.Fatal("victim's listener not ready within 30s")
		}
		hostileNetAttack(t, in, "attacker", aTap, 1, "udp", aIP, bIP, "4444", "routed-around")
		uc, err := net.Dial("udp4", net.JoinHostPort(bIP, "4444"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := uc.Write([]byte("from-host")); err != nil {
			t.Fatal(err)
		}
		uc.Close()
		var got []string
		for l := range lines { // ends when the listener's 10 s are up
			got = append(got, l)
		}
		_ = listener.Wait()
		r := struct{ out string }{strings.Join(got, "\n")}
		if !strings.Contains(r.out, "from-host from "+hostileNetGateway) {
			t.Errorf("victim did not get the host's datagram (positive control): %q", r.out)
		}
		if strings.Contains(r.out, "routed-around") {
			t.Errorf("isolated victim received the attacker's datagram routed through the host: %q", r.out)
		}

		// The host still reaches both (and they it: DNS on the gateway).
		if c, err := net.DialTimeout("tcp4", net.JoinHostPort(bIP, "22"), 10*time.Second); err != nil {
			t.Errorf("host to victim: %v", err)
		} else {
			c.Close()
		}
		if out := in.ok("banger", "vm", "exec", "attacker", "--", "getent", "hosts", "victim.banger"); !strings.HasPrefix(strings.TrimSpace(out), bIP) {
			t.Errorf("attacker resolves victim.banger through the gateway as %q, want %s", out, bIP)
		}
	})

	// Shared VMs reach each other, but not an isolated one.
	in.ok("banger", "vm", "rm", "-f", "victim")
	hostileNetVM(t, in, "shared1", "", "--network", "shared")
	s2IP, _, _ := hostileNetVM(t, in, "shared2", "", "--network", "shared")
	if got := in.inspect("shared2").Network; got != "shared" {
		t.Errorf("shared2 stored network %q", got)
	}
	hostileNetSSHOpen(t, in, "shared2")
	hostileNetSSHOpen(t, in, "attacker")
	var last string
	ok := false
	for i := 0; i < 5 && !ok; i++ {
		ok, last = hostileNetReach(in, "shared1", s2IP)
	}
	if !ok {
		t.Errorf("shared1 could not reach shared2's sshd: %s", last)
	}
	if ok, last := hostileNetReach(in, "shared1", aIP); ok {
		t.Errorf("shared1 reached the isolated attacker's sshd: %s", last)
	}
}

// hostileNetForwarding reads this namespace's ip_forward.
func hostileNetForwarding(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// hostileNetHostState is what banger may have changed in this namespace.
func hostileNetHostState(t *testing.T) (bridge bool, tables []string) {
	t.Helper()
	_, err := netlink.LinkByName("banger0")
	bridge = err == nil
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tbs, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tbs {
		if strings.HasPrefix(tb.Name, "banger") {
			tables = append(tables, fmt.Sprintf("%d/%s", tb.Family, tb.Name))
		}
	}
	return bridge, tables
}

// TestHostileNetNoHostChangeBeforeFirstVM: starting the daemon (and its
// root helper) and listing VMs changes nothing on the host's network; the
// first VM start makes the bridge and tables and turns forwarding on;
// `system network down` removes them and puts ip_forward back to the value
// it had, for a prior 0 and a prior 1. Status and doctor say what banger
// changed.
func TestHostileNetNoHostChangeBeforeFirstVM(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t) // imports ran: the daemon and its helper are up
	for _, prior := range []string{"0", "1"} {
		t.Run("prior "+prior, func(t *testing.T) {
			if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte(prior+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			in.ok("banger", "vm", "ls")
			if br, tables := hostileNetHostState(t); br || len(tables) != 0 || hostileNetForwarding(t) != prior {
				t.Fatalf("before any vm: bridge %v, tables %v, ip_forward %s (want none, none, %s)", br, tables, hostileNetForwarding(t), prior)
			}
			var st api.NetworkStatus
			if err := json.Unmarshal([]byte(in.ok("banger", "system", "network", "status", "--json")), &st); err != nil {
				t.Fatal(err)
			}
			if len(st.Network.Changes) != 0 {
				t.Errorf("status before any vm reports changes %q", st.Network.Changes)
			}
			if out := in.ok("banger", "system", "network", "status"); !strings.Contains(out, "changed:     nothing on this host") {
				t.Errorf("status before any vm:\n%s", out)
			}
			if out, _, _ := in.run("banger", "doctor"); !strings.Contains(out, "banger has changed nothing on this host's network") {
				t.Errorf("doctor before any vm:\n%s", out)
			}

			in.ok("banger", "vm", "create", "--start", "--name", "first", "--cpus", "1", "--memory", "384M")
			br, tables := hostileNetHostState(t)
			if !br || len(tables) != 2 || hostileNetForwarding(t) != "1" {
				t.Fatalf("after the first vm: bridge %v, tables %v, ip_forward %s (want bridge, inet and bridge tables, 1)", br, tables, hostileNetForwarding(t))
			}
			status := in.ok("banger", "system", "network", "status")
			doctor, _, _ := in.run("banger", "doctor")
			for what, out := range map[string]string{"status": status, "doctor": doctor} {
				if !strings.Contains(out, "bridge banger0 created") || !strings.Contains(out, "nftables table bridge banger") {
					t.Errorf("%s after the first vm does not say what banger changed:\n%s", what, out)
				}
				wantFwd := prior == "0"
				if got := strings.Contains(out, "ip_forward set to 1 (was 0"); got != wantFwd {
					t.Errorf("%s mentions the ip_forward change: %v, want %v:\n%s", what, got, wantFwd, out)
				}
			}

			in.ok("banger", "vm", "rm", "-f", "first")
			in.ok("banger", "system", "network", "down")
			if br, tables := hostileNetHostState(t); br || len(tables) != 0 || hostileNetForwarding(t) != prior {
				t.Fatalf("after network down: bridge %v, tables %v, ip_forward %s (want none, none, the prior %s)", br, tables, hostileNetForwarding(t), prior)
			}
		})
	}
}

// TestHostileNetRebindOnAdopt: a VM that outlives its daemon and helper is
// bound to its lease again when the next daemon re-adopts it, even when the
// bridge filter table is gone (as after an upgrade from a banger without
// one): the running guest is neither left unfiltered nor cut off.
func TestHostileNetRebindOnAdopt(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	nft := testutil.RequireBinary(t, "nft")
	in := vmInstance(t)
	in.ok("banger", "vm", "create", "--start", "--name", "kept", "--cpus", "1", "--memory", "384M")
	vm := in.inspect("kept")
	hostileNetSSHOpen(t, in, "kept")
	in.ok("banger", "daemon", "stop") // stops the helper it spawned too
	if !processAlive(vm.PID) {
		t.Fatal("daemon stop killed the vm")
	}
	hostileNetCmd(t, nft, "delete", "table", "bridge", "banger")
	in.ok("banger", "daemon", "start")
	var st api.NetworkStatus
	waitFor(t, 20*time.Second, "the re-adopted vm's tap has its source rules", func() (bool, string) {
		st = api.NetworkStatus{}
		if err := json.Unmarshal([]byte(in.ok("banger", "system", "network", "status", "--json")), &st); err != nil {
			return false, err.Error()
		}
		for _, tp := range st.Network.Taps {
			// 7 source checks, the own-subnet accept and the metadata drop.
			if tp.Name == vm.Tap && tp.SourceRules == 9 && tp.Isolated {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", st.Network.Taps)
	})
	if out := hostileNetCmd(t, nft, "list", "table", "bridge", "banger"); !strings.Contains(out, "ip saddr != "+vm.IP+" drop") ||
		!strings.Contains(out, `iifname "`+vm.Tap+`" ip daddr 169.254.0.0/16 drop`) {
		t.Errorf("bridge table lacks the vm's source rule or its egress policy:\n%s", out)
	}
	c, err := net.DialTimeout("tcp4", net.JoinHostPort(vm.IP, "22"), 10*time.Second)
	if err != nil {
		t.Fatalf("host to the re-adopted vm: %v", err)
	}
	c.Close()
}
