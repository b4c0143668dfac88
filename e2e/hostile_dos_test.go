package e2e

// Hostile tests of the root helper's socket: its owner uid (a real,
// unprivileged user) tries to stop or bloat the real root helper process by
// exhausting its descriptors, holding slow connections and sending a huge
// request. After each attack the helper must still answer ping with the
// same pid, and its memory must not have grown with the attack.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/roothelper"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
	"github.com/bangerdev/banger/internal/vmdns"
)

// The attacker is this test binary re-run as the other user; init runs
// before TestMain, so the attacker never builds or runs tests.
func init() {
	if mode := os.Getenv("BANGER_E2E_DOS_ATTACK"); mode != "" {
		os.Exit(hostileDoSAttackMain(mode))
	}
}

// hostileDoSReport is what an attacker run prints (one JSON line).
type hostileDoSReport struct {
	Opened  int            `json:"opened"`            // connections established
	Busy    int            `json:"busy"`              // refused: all connections in use
	Timeout int            `json:"timeout"`           // cut off: no request within the deadline
	TooBig  int            `json:"too_big"`           // refused: request over the cap
	Other   int            `json:"other"`             // anything else (e.g. still queued when the attack ended)
	Sample  []string       `json:"sample,omitempty"`  // a few of those
	Sent    int            `json:"sent,omitempty"`    // dns: queries sent
	Answers map[string]int `json:"answers,omitempty"` // dns: replies by rcode
}

func hostileDoSAttackMain(mode string) int {
	sock := os.Getenv("BANGER_E2E_DOS_SOCKET")
	conns, _ := strconv.Atoi(os.Getenv("BANGER_E2E_DOS_CONNS"))
	hold, _ := time.ParseDuration(os.Getenv("BANGER_E2E_DOS_HOLD"))
	var rep hostileDoSReport
	var mu sync.Mutex
	classify := func(e *api.Error, err error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case e != nil && strings.Contains(e.Message, "connections are in use"):
			rep.Busy++
		case e != nil && strings.Contains(e.Message, "no complete request within"):
			rep.Timeout++
		case e != nil && strings.Contains(e.Message, "request is larger than"):
			rep.TooBig++
		default:
			rep.Other++
			if len(rep.Sample) < 3 {
				if e != nil {
					err = e
				}
				rep.Sample = append(rep.Sample, fmt.Sprint(err))
			}
		}
	}
	var wg sync.WaitGroup
	switch mode {
	case "hold": // open conns, never (or only slowly) send a request
		deadline := time.Now().Add(hold)
		for i := 0; i < conns && time.Now().Before(deadline); i++ {
			c, err := net.DialTimeout("unix", sock, time.Second)
			if err != nil {
				classify(nil, err)
				continue
			}
			rep.Opened++
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if i%2 == 1 { // slowloris: half a request, a byte at a time
					go func() {
						for _, b := range []byte(`{"v":1,"method":"helper.ping"`) {
							if _, err := c.Write([]byte{b}); err != nil {
								return
							}
							time.Sleep(300 * time.Millisecond)
						}
					}()
				}
				classify(hostileDoSReadError(c, time.Until(deadline)))
				// Keep the descriptor until the end either way.
				time.Sleep(time.Until(deadline))
			}()
		}
	case "huge": // requests of 100 MiB
		for range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.DialTimeout("unix", sock, 5*time.Second)
				if err != nil {
					classify(nil, err)
					return
				}
				defer c.Close()
				mu.Lock()
				rep.Opened++
				mu.Unlock()
				go func() {
					chunk := bytes.Repeat([]byte("A"), 1<<20)
					if _, err := io.WriteString(c, `{"v":1,"method":"helper.ping","params":"`); err != nil {
						return
					}
					for range 100 {
						if _, err := c.Write(chunk); err != nil {
							return
						}
					}
					_, _ = io.WriteString(c, "\"}\n")
				}()
				classify(hostileDoSReadError(c, hold))
			}()
		}
	case "dnsflood": // conns queries over UDP to the DNS server at sock, alternating a vm name and an outside name
		rep.Answers = map[string]int{}
		c, err := net.Dial("udp", sock)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer c.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 4096)
			for {
				_ = c.SetReadDeadline(time.Now().Add(hold))
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				var m dns.Msg
				if m.Unpack(buf[:n]) == nil {
					mu.Lock()
					rep.Answers[dns.RcodeToString[m.Rcode]]++
					mu.Unlock()
				}
			}
		}()
		// Sustained: as fast as it can for BANGER_E2E_DOS_FOR (at most
		// conns queries).
		floodFor, _ := time.ParseDuration(os.Getenv("BANGER_E2E_DOS_FOR"))
		start := time.Now()
		for i := 0; i < conns && time.Since(start) < floodFor; i++ {
			name := "alpha.banger."
			if i%2 == 1 {
				name = "example.org."
			}
			q := new(dns.Msg).SetQuestion(name, dns.TypeA)
			q.Id = uint16(i)
			b, _ := q.Pack()
			if _, err := c.Write(b); err == nil {
				rep.Sent++
			}
		}
		<-done
	case "dnsquery": // not an attack: a guest's query, retried as stub resolvers do
		cl := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond}
		var r *dns.Msg
		var err error
		for range 6 {
			rep.Sent++
			if r, _, err = cl.Exchange(new(dns.Msg).SetQuestion(os.Getenv("BANGER_E2E_DOS_NAME"), dns.TypeA), sock); err == nil {
				break
			}
		}
		if err != nil {
			rep.Other, rep.Sample = 1, []string{err.Error()}
			break
		}
		rep.Answers = map[string]int{dns.RcodeToString[r.Rcode]: 1}
		rep.Opened = len(r.Answer)
	default:
		fmt.Fprintf(os.Stderr, "unknown attack %q\n", mode)
		return 2
	}
	wg.Wait()
	_ = json.NewEncoder(os.Stdout).Encode(rep)
	return 0
}

// hostileDoSReadError reads frames until an error frame (or d passes).
func hostileDoSReadError(c net.Conn, d time.Duration) (*api.Error, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	dec := json.NewDecoder(bufio.NewReader(c))
	for {
		var f rpc.Frame
		if err := dec.Decode(&f); err != nil {
			return nil, err
		}
		if f.Type == rpc.FrameError {
			return f.Error, nil
		}
	}
}

// hostileDoSHelper is a real root helper owned by the test user.
type hostileDoSHelper struct {
	pid  int
	sock string
	log  string
}

func hostileDoSStartHelper(t *testing.T, ownerUID uint32) *hostileDoSHelper {
	t.Helper()
	dir, err := os.MkdirTemp("", "banger-dos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	h := &hostileDoSHelper{sock: filepath.Join(dir, "helper.sock"), log: filepath.Join(dir, "helper.log")}
	logf, err := os.Create(h.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// Not --managed: as under systemd, the owner may not shut it down.
	cmd := exec.Command(filepath.Join(binDir, "banger-helper"), "--owner-uid", strconv.Itoa(int(ownerUID)), "--socket", h.sock, "--debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "BANGER_HOME="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h.pid = cmd.Process.Pid
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(h.log)
			t.Logf("helper log (last 4 KiB):\n%s", b[max(0, len(b)-4096):])
		}
	})
	waitForSocket(t, h.sock)
	return h
}

// checkAlive pings the helper as root until it answers (bounded) and
// checks it is still the same process; it returns how long that took.
func (h *hostileDoSHelper) checkAlive(t *testing.T, within time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < within {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var id api.HelperIdentity
		_, err = rpc.Invoke(ctx, rpc.NewClient(h.sock), api.MethodHelperPing, api.Empty{})
		if err == nil {
			id, err = rpc.Invoke(ctx, rpc.NewClient(h.sock), api.MethodHelperIdentity, api.Empty{})
		}
		cancel()
		if err == nil {
			if id.PID != h.pid {
				t.Fatalf("%s: helper pid is %d, was %d", what, id.PID, h.pid)
			}
			return time.Since(start)
		}
		if !processAlive(h.pid) {
			t.Fatalf("%s: the root helper (pid %d) died: %v", what, h.pid, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: the root helper did not answer ping within %s: %v", what, within, err)
	return 0
}

// hostileDoSStatus reads a /proc/PID/status field in KiB (VmRSS, VmHWM).
func hostileDoSStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", field, l, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// hostileDoSRun runs an attack as uid:gid in the background.
func hostileDoSRun(t *testing.T, exe string, uid, gid uint32, mode, sock string, conns int, hold time.Duration, env ...string) func() hostileDoSReport {
	t.Helper()
	cmd := exec.Command(exe)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "BANGER_E2E_DOS_ATTACK=" + mode, "BANGER_E2E_DOS_SOCKET=" + sock,
		"BANGER_E2E_DOS_CONNS=" + strconv.Itoa(conns), "BANGER_E2E_DOS_HOLD=" + hold.String()}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	return func() hostileDoSReport {
		t.Helper()
		select {
		case err := <-done:
			done <- err // for the cleanup
			if err != nil {
				t.Fatalf("attacker %s: %v\n%s", mode, err, errb.String())
			}
		case <-time.After(hold + 60*time.Second):
			t.Fatalf("attacker %s did not finish", mode)
		}
		var rep hostileDoSReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("attacker %s report %q: %v\n%s", mode, out.String(), err, errb.String())
		}
		t.Logf("attacker %s: %+v", mode, rep)
		return rep
	}
}

func TestHostileDoSRootHelperSurvivesItsOwner(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "useradd")
	uid, gid := ensureTestUser(t, "banger-e2e-dos")
	exe := filepath.Join(binDir, "dosattack.test")
	copyFile(t, mustExecutable(t), exe, 0o755)
	h := hostileDoSStartHelper(t, uid)
	baseRSS := hostileDoSStatus(t, h.pid, "VmRSS")
	t.Logf("root helper pid %d, VmRSS %d KiB", h.pid, baseRSS)

	// Each attack runs against the survivor of the previous ones; a dead
	// helper ends the test.
	if !t.Run("fd exhaustion", func(t *testing.T) {
		// Few descriptors to spare, so the owner's connections run the
		// helper out of them (EMFILE on accept) long before its
		// connection cap.
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", h.pid))
		if err != nil {
			t.Fatal(err)
		}
		var old unix.Rlimit
		low := unix.Rlimit{Cur: uint64(len(ents) + 12)}
		if err := unix.Prlimit(h.pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
			t.Fatal(err)
		}
		low.Max = old.Max
		if err := unix.Prlimit(h.pid, unix.RLIMIT_NOFILE, &low, nil); err != nil {
			t.Fatal(err)
		}
		defer unix.Prlimit(h.pid, unix.RLIMIT_NOFILE, &old, nil)
		t.Logf("helper has %d descriptors open, limit now %d", len(ents), low.Cur)

		wait := hostileDoSRun(t, exe, uid, gid, "hold", h.sock, 200, 8*time.Second)
		// The attack must really reach EMFILE, or this proves nothing.
		deadline := time.Now().Add(8 * time.Second)
		for !strings.Contains(readFile(h.log), "too many open files") {
			if time.Now().After(deadline) {
				t.Fatal("the helper never ran out of descriptors: the attack did not bite")
			}
			if !processAlive(h.pid) {
				t.Fatal("the helper died")
			}
			time.Sleep(100 * time.Millisecond)
		}
		rep := wait()
		if rep.Opened < 100 {
			t.Fatalf("attacker opened only %d connections", rep.Opened)
		}
		took := h.checkAlive(t, 15*time.Second, "after fd exhaustion")
		t.Logf("helper answered %s after the attacker left", took.Round(time.Millisecond))
	}) {
		t.FailNow()
	}

	if !t.Run("slow clients", func(t *testing.T) {
		// 300 connections that send nothing or half a request, a byte at a
		// time, held for 12 s: more than the 64-connection cap and longer
		// than the 5 s request deadline.
		start := time.Now()
		wait := hostileDoSRun(t, exe, uid, gid, "hold", h.sock, 300, 12*time.Second)
		time.Sleep(time.Second) // let the attacker take every slot
		// While the attacker still holds its connections, the deadline
		// frees the slots: root gets through.
		took := h.checkAlive(t, 9*time.Second, "during the slow-client attack")
		if since := time.Since(start); since > 11*time.Second {
			t.Fatalf("helper answered only after %s, when the attack was nearly over", since)
		}
		t.Logf("helper answered %s into the attack (after %s of retries)", time.Since(start).Round(time.Millisecond), took.Round(time.Millisecond))
		rep := wait()
		if rep.Busy == 0 || rep.Timeout == 0 {
			t.Fatalf("the limits did not engage: %+v", rep)
		}
		h.checkAlive(t, 5*time.Second, "after the slow-client attack")
	}) {
		t.FailNow()
	}

	if !t.Run("huge requests", func(t *testing.T) {
		// Peak RSS from here on (clear_refs 5 resets VmHWM).
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", h.pid), []byte("5"), 0); err != nil {
			t.Fatal(err)
		}
		before := hostileDoSStatus(t, h.pid, "VmRSS")
		rep := hostileDoSRun(t, exe, uid, gid, "huge", h.sock, 4, 30*time.Second)()
		if rep.TooBig != 4 {
			t.Fatalf("4 requests of 100 MiB: %d refused as too large: %+v", rep.TooBig, rep)
		}
		peak := hostileDoSStatus(t, h.pid, "VmHWM")
		t.Logf("VmRSS before %d KiB, peak during 4 x 100 MiB requests %d KiB", before, peak)
		if peak > before+32<<10 {
			t.Fatalf("helper memory grew from %d KiB to a peak of %d KiB reading the requests", before, peak)
		}
		h.checkAlive(t, 5*time.Second, "after huge requests")
	}) {
		t.FailNow()
	}

	if rss := hostileDoSStatus(t, h.pid, "VmRSS"); rss > baseRSS+64<<10 {
		t.Fatalf("helper VmRSS grew from %d KiB to %d KiB over the attacks", baseRSS, rss)
	}
	h.checkAlive(t, 5*time.Second, "at the end")
}

// The helper's VM DNS server, which every local user can reach on the
// bridge address, under a flood from the owner uid: the flood is cut to its
// per-source rate, names outside the VM domain are REFUSED to it (it is not
// a guest), a guest address is still answered meanwhile, and the helper
// stays the same process with flat memory.
func TestHostileDoSHelperDNSFlood(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	testutil.RequireBinary(t, "useradd")
	testutil.RequireBinary(t, "nsenter")
	uid, gid := ensureTestUser(t, "banger-e2e-dos")
	exe := filepath.Join(binDir, "dosattack.test")
	copyFile(t, mustExecutable(t), exe, 0o755)
	h := hostileDoSStartHelper(t, uid)
	c := roothelper.NewClient(h.sock)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c.NetworkUp(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.NetworkDown(context.Background())
	st, err := c.UpdateDNS(ctx, api.DNSUpdate{Domain: "banger", Records: []api.DNSRecord{{Name: "alpha", IP: "10.213.77.2"}}})
	if err != nil || !st.Serving {
		t.Fatalf("dns.update: %+v %v", st, err)
	}
	// A guest: its own network namespace on a veth port of the bridge, so
	// its queries arrive from the guest subnet as a VM's do (a local
	// address would not do: local traffic from the subnet is masqueraded).
	guest := exec.Command("unshare", "-n", "sleep", "600")
	if err := guest.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { guest.Process.Kill(); guest.Wait() }()
	gpid := strconv.Itoa(guest.Process.Pid)
	// unshare(1) enters its new namespace after it started: a veth peer
	// moved there before that would land in ours.
	ourNS, _ := os.Readlink("/proc/self/ns/net")
	waitFor(t, 5*time.Second, "guest in its own network namespace", func() (bool, string) {
		ns, err := os.Readlink("/proc/" + gpid + "/ns/net")
		return err == nil && ns != ourNS, ns
	})
	for _, args := range [][]string{
		{"ip", "link", "add", "dosg0", "type", "veth", "peer", "name", "eth0", "netns", gpid},
		{"ip", "link", "set", "dosg0", "master", "banger0", "up"},
		{"nsenter", "-t", gpid, "-n", "ip", "link", "set", "lo", "up"},
		{"nsenter", "-t", gpid, "-n", "ip", "addr", "add", "10.213.77.50/24", "dev", "eth0"},
		{"nsenter", "-t", gpid, "-n", "ip", "link", "set", "eth0", "up"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	guestQuery := func(name string) (rcode string, answers int) {
		start := time.Now()
		t.Helper()
		cmd := exec.Command("nsenter", "-t", gpid, "-n", exe)
		cmd.Env = []string{"BANGER_E2E_DOS_ATTACK=dnsquery", "BANGER_E2E_DOS_SOCKET=" + vmDNS, "BANGER_E2E_DOS_NAME=" + name}
		out, err := cmd.Output()
		var rep hostileDoSReport
		if err == nil {
			err = json.Unmarshal(out, &rep)
		}
		if err != nil || len(rep.Answers) != 1 {
			t.Fatalf("guest query %s: %v %+v", name, err, rep)
		}
		for rc := range rep.Answers {
			rcode = rc
		}
		t.Logf("guest %s: %s after %d tries (%s)", name, rcode, rep.Sent, time.Since(start).Round(time.Millisecond))
		return rcode, rep.Opened
	}
	// The bridge port may take a moment to forward.
	waitFor(t, 10*time.Second, "guest reaches the vm dns", func() (bool, string) {
		cmd := exec.Command("nsenter", "-t", gpid, "-n", exe)
		cmd.Env = []string{"BANGER_E2E_DOS_ATTACK=dnsquery", "BANGER_E2E_DOS_SOCKET=" + vmDNS, "BANGER_E2E_DOS_NAME=alpha.banger."}
		out, err := cmd.Output()
		return err == nil && strings.Contains(string(out), `"NOERROR":1`), string(out)
	})
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", h.pid), []byte("5"), 0); err != nil {
		t.Fatal(err)
	}
	before := hostileDoSStatus(t, h.pid, "VmRSS")

	// The attacker is a local user (its queries come from the host side),
	// flooding as fast as it can for 4 s.
	const flood, floodFor = 2_000_000, 4 * time.Second
	start := time.Now()
	wait := hostileDoSRun(t, exe, uid, gid, "dnsflood", vmDNS, flood, 2*time.Second, "BANGER_E2E_DOS_FOR="+floodFor.String())
	time.Sleep(300 * time.Millisecond)
	// Meanwhile the guest is answered (its stub resolver retrying at most
	// every 500 ms), and its outside names are forwarded (SERVFAIL here: no
	// upstream is reachable from this namespace), not REFUSED.
	for i := range 3 {
		if rc, n := guestQuery("alpha.banger."); rc != "NOERROR" || n != 1 {
			t.Fatalf("guest query %d during the flood: %s with %d answers", i, rc, n)
		}
	}
	if rc, _ := guestQuery("example.org."); rc == "REFUSED" {
		t.Fatal("the guest's outside name was refused, want it forwarded")
	}
	if d := time.Since(start); d > floodFor {
		t.Fatalf("the guest's queries took until %s, after the flood: they were not answered during it", d.Round(time.Millisecond))
	}
	rep := wait()
	// The reader stops 2 s after the last reply.
	elapsed := time.Since(start).Seconds()
	got := 0
	for _, n := range rep.Answers {
		got += n
	}
	allowed := vmdns.DefaultBurstPerSource + int(vmdns.DefaultRatePerSource*elapsed) + 5
	t.Logf("flood: %d sent, replies %v (%d in %.1fs, at most %d allowed)", rep.Sent, rep.Answers, got, elapsed, allowed)
	if rep.Sent < 10*allowed || got == 0 || got > allowed {
		t.Fatalf("flood of %d from one source got %d replies, want 1..%d", rep.Sent, got, allowed)
	}
	if rep.Answers["REFUSED"] == 0 || rep.Answers["NOERROR"] == 0 || got != rep.Answers["REFUSED"]+rep.Answers["NOERROR"] {
		t.Fatalf("the host-side flood should see its vm names answered and outside names refused: %v", rep.Answers)
	}
	if peak := hostileDoSStatus(t, h.pid, "VmHWM"); peak > before+32<<10 {
		t.Fatalf("helper memory grew from %d KiB to a peak of %d KiB under the flood", before, peak)
	}
	h.checkAlive(t, 5*time.Second, "after the dns flood")
	if rc, n := guestQuery("alpha.banger."); rc != "NOERROR" || n != 1 {
		t.Fatalf("guest query after the flood: %s with %d answers", rc, n)
	}
}
