package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/testutil"
)

// vmDNS is the root helper's VM DNS server on the default bridge address.
const vmDNS = "10.213.77.1:53"

// resolveA asks vmDNS for name's A record: the addresses and the rcode.
func resolveA(name string) ([]string, int, error) {
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	r, _, err := c.Exchange(new(dns.Msg).SetQuestion(dns.Fqdn(name), dns.TypeA), vmDNS)
	if err != nil {
		return nil, 0, err
	}
	var ips []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	return ips, r.Rcode, nil
}

// waitFor polls cond every 250 ms for at most d, failing with what it last said.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for i := 0; ; i++ {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) || i > int(d/(250*time.Millisecond))+1 {
			t.Fatalf("%s: not within %s (last: %s)", what, d, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func TestDNSResolvesVMNames(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	var wg sync.WaitGroup
	errs := make(chan string, 2)
	for _, n := range []string{"alpha", "beta"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, errOut, code := in.run("banger", "vm", "create", "--start", "--name", n, "--cpus", "1", "--memory", "384M", "--network", "shared"); code != 0 {
				errs <- fmt.Sprintf("create %s: exit %d %s %s", n, code, out, errOut)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	alphaIP, betaIP := in.inspect("alpha").IP, in.inspect("beta").IP
	if alphaIP == "" || betaIP == "" || alphaIP == betaIP {
		t.Fatalf("vm addresses alpha %q beta %q", alphaIP, betaIP)
	}

	// The host resolves through the helper's server on the bridge address.
	waitFor(t, 10*time.Second, "host resolves beta.banger", func() (bool, string) {
		ips, rcode, err := resolveA("beta.banger")
		return err == nil && len(ips) == 1 && ips[0] == betaIP, fmt.Sprintf("%v %s %v", ips, dns.RcodeToString[rcode], err)
	})
	if ips, _, err := resolveA("ALPHA.banger."); err != nil || len(ips) != 1 || ips[0] != alphaIP {
		t.Fatalf("ALPHA.banger: %v %v, want %s", ips, err, alphaIP)
	}

	// The guest's resolver is the gateway: libc resolves the other VM's name.
	out := in.ok("banger", "vm", "exec", "alpha", "--", "getent", "hosts", "beta.banger")
	if f := strings.Fields(out); len(f) < 2 || f[0] != betaIP || f[1] != "beta.banger" {
		t.Fatalf("getent hosts beta.banger in alpha: %q, want %s", out, betaIP)
	}
	// ... and reaches it by name: bash in alpha opens a TCP connection to
	// sshd in beta through the name (sshd started here if the boot did not).
	in.ok("banger", "vm", "exec", "beta", "--", "sh", "-c",
		"test -s /run/sshd.pid || { mkdir -p /run/sshd && ssh-keygen -A >/dev/null && /usr/sbin/sshd; }")
	out = in.ok("banger", "vm", "exec", "alpha", "--", "bash", "-c",
		"for i in 1 2 3 4 5 6 7 8 9 10; do exec 3<>/dev/tcp/beta.banger/22 && break; sleep 0.5; done; head -c 7 <&3")
	if !strings.HasPrefix(out, "SSH-2.0") {
		t.Fatalf("alpha → beta.banger:22 said %q, want an SSH banner", out)
	}
	in.ok("banger", "vm", "exec", "beta", "--", "getent", "hosts", "alpha.banger")

	// The network status shows the DNS server, and down refuses under VMs.
	var st api.NetworkStatus
	if err := json.Unmarshal([]byte(in.ok("banger", "system", "network", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.DNS == nil || !st.DNS.Serving || st.DNS.Addr != vmDNS || st.DNS.Names != 2 || len(st.Network.Taps) != 2 || st.Network.Bridge == nil {
		t.Fatalf("network status: %+v dns %+v", st.Network, st.DNS)
	}
	if _, errOut, code := in.run("banger", "system", "network", "down"); code == 0 || !strings.Contains(errOut, "alpha") || !strings.Contains(errOut, "beta") {
		t.Fatalf("network down under running vms: exit %d, stderr %q", code, errOut)
	}

	// A removed VM stops resolving, on the host and in the other guest.
	in.ok("banger", "vm", "rm", "-f", "beta")
	waitFor(t, 10*time.Second, "beta.banger NXDOMAIN after rm", func() (bool, string) {
		ips, rcode, err := resolveA("beta.banger")
		return err == nil && rcode == dns.RcodeNameError, fmt.Sprintf("%v %s %v", ips, dns.RcodeToString[rcode], err)
	})
	if out, _, code := in.run("banger", "vm", "exec", "alpha", "--", "getent", "hosts", "beta.banger"); code == 0 {
		t.Fatalf("alpha still resolves removed beta.banger: %q", out)
	}
	if ips, _, err := resolveA("alpha.banger"); err != nil || len(ips) != 1 || ips[0] != alphaIP {
		t.Fatalf("alpha.banger after beta's rm: %v %v", ips, err)
	}

	// With no VM left, down removes the network and the DNS server with it.
	in.ok("banger", "vm", "rm", "-f", "alpha")
	in.ok("banger", "system", "network", "down")
	if _, _, err := resolveA("alpha.banger"); err == nil {
		t.Fatal("vm dns still answers after network down")
	}
	st = api.NetworkStatus{} // Unmarshal keeps fields the reply omits
	if err := json.Unmarshal([]byte(in.ok("banger", "system", "network", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Network.Bridge != nil || len(st.Network.Taps) != 0 || st.Network.Chains != nil {
		t.Fatalf("after network down: %+v\ndaemon log:\n%s\nhelper log:\n%s", st.Network, readFile(in.p.DaemonLog()), readFile(in.p.HelperLog()))
	}
}
