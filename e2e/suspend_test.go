package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/testutil"
	"golang.org/x/sys/unix"
)

// suspendBridgeAddr is the default bridge address: the host side of every
// VM's network, inside the test's own network namespace.
const suspendBridgeAddr = "10.213.77.1"

// suspendMinAway is how long a VM stays suspended in the tests, so that a
// guest clock that was not stepped on resume is visibly behind.
const suspendMinAway = 8 * time.Second

// TestSuspendResumeAcrossDaemonRestart suspends a VM holding a process and
// a TCP connection, kills the daemon and deletes the VM's tap (what a host
// reboot does), starts a new daemon and resumes: same boot_id, the process
// still runs, the connection still carries data both ways, the guest clock
// is the host's again.
func TestSuspendResumeAcrossDaemonRestart(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	in.ok("banger", "vm", "create", "--start", "--name", "sleeper", "--memory", "512M")
	before := in.inspect("sleeper")

	// A host listener on the bridge address; the guest dials it and echoes.
	ln, err := net.Listen("tcp", suspendBridgeAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	sleepPID := strings.TrimSpace(in.ok("banger", "vm", "exec", "sleeper", "--", "sh", "-c",
		"setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!"))
	if _, err := strconv.Atoi(sleepPID); err != nil {
		t.Fatalf("guest sleep pid %q", sleepPID)
	}
	in.ok("banger", "vm", "exec", "sleeper", "--", "sh", "-c", fmt.Sprintf(
		`setsid bash -c 'exec 3<>/dev/tcp/%s/%d; echo hello >&3; while read -r l <&3; do echo "echo:$l" >&3; done' </dev/null >/dev/null 2>&1 &`,
		suspendBridgeAddr, port))
	var conn net.Conn
	select {
	case conn = <-accepted:
	case <-time.After(30 * time.Second):
		t.Fatal("the guest did not connect to the host listener")
	}
	defer conn.Close()
	rd := bufio.NewReader(conn)
	suspendExpectLine(t, conn, rd, "hello")

	in.ok("banger", "vm", "suspend", "sleeper")
	suspendedAt := time.Now()
	susp := in.inspect("sleeper")
	if susp.State != model.StateSuspended || susp.PID != 0 {
		t.Fatalf("after suspend: state %s pid %d, want suspended with no vmm", susp.State, susp.PID)
	}
	if processAlive(before.PID) {
		t.Fatalf("qemu pid %d still runs after suspend (its memory is not freed)", before.PID)
	}
	for _, f := range []string{"suspend.state", "suspend.json"} {
		if st, err := os.Stat(filepath.Join(before.Dir, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("saved state %s: %v (want a 0600 file)", f, err)
		}
	}

	// Daemon killed, tap gone, daemon started again.
	pid := ReadPidOrFail(t, in.p.PidFile())
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	if out, err := exec.Command("ip", "link", "del", before.Tap).CombinedOutput(); err != nil {
		t.Fatalf("delete tap %s: %v: %s", before.Tap, err, out)
	}
	in.ok("banger", "daemon", "start")
	if vm := in.inspect("sleeper"); vm.State != model.StateSuspended {
		t.Fatalf("after daemon restart: state %s, want suspended", vm.State)
	}
	if d := time.Until(suspendedAt.Add(suspendMinAway)); d > 0 {
		time.Sleep(d)
	}

	out := in.ok("banger", "vm", "resume", "sleeper")
	after := in.inspect("sleeper")
	if after.State != model.StateRunning || after.BootID != before.BootID || !strings.Contains(out, before.BootID) {
		t.Fatalf("after resume: %+v, output %q (want running with boot_id %s)", after, out, before.BootID)
	}
	if after.PID == 0 || after.PID == before.PID || !processAlive(after.PID) {
		t.Fatalf("after resume: qemu pid %d (before %d) is not a new live process", after.PID, before.PID)
	}
	if err := exec.Command("ip", "link", "show", before.Tap).Run(); err != nil {
		t.Fatalf("resume did not re-create tap %s: %v", before.Tap, err)
	}
	if cmdline := in.ok("banger", "vm", "exec", "sleeper", "--", "cat", "/proc/"+sleepPID+"/cmdline"); cmdline != "sleep\x001000\x00" {
		t.Fatalf("guest process %s after resume: cmdline %q, want sleep 1000", sleepPID, cmdline)
	}
	suspendExpectEcho(t, conn, rd, "after-resume")
	guest := strings.TrimSpace(in.ok("banger", "vm", "exec", "sleeper", "--", "date", "+%s.%N"))
	host := float64(time.Now().UnixNano()) / 1e9
	g, err := strconv.ParseFloat(guest, 64)
	if err != nil || host-g > 3 || g-host > 3 {
		t.Fatalf("guest clock %q vs host %.3f after %s suspended: not stepped to the host's time", guest, host, suspendMinAway)
	}
	// The agent logs the step to the console, with how far it moved.
	stepped := ""
	for _, l := range strings.Split(readFile(filepath.Join(before.Dir, "console.log")), "\n") {
		if strings.Contains(l, "clock stepped by host") {
			stepped = l
		}
	}
	if stepped == "" {
		t.Fatal("the guest console shows no clock step after resume")
	}
	t.Logf("guest clock %s, host %.3f; agent: %s", guest, host, stepped)
	for _, f := range []string{"suspend.state", "suspend.json"} {
		if _, err := os.Stat(filepath.Join(before.Dir, f)); !os.IsNotExist(err) {
			t.Fatalf("stale saved state %s left after resume: %v", f, err)
		}
	}
	// A second round, without a daemon restart, through vm start.
	in.ok("banger", "vm", "suspend", "sleeper")
	in.ok("banger", "vm", "start", "sleeper")
	if vm := in.inspect("sleeper"); vm.State != model.StateRunning || vm.BootID != before.BootID {
		t.Fatalf("vm start of a suspended vm: %+v, want it resumed with boot_id %s", vm, before.BootID)
	}
	suspendExpectEcho(t, conn, rd, "second")
	in.ok("banger", "vm", "rm", "-f", "sleeper")
}

// TestSuspendRefusesBadState: a suspend that fails for lack of disk space
// leaves the VM running and nothing saved; a truncated or corrupt saved
// state is refused before any VMM starts, the VM stays suspended and its
// state untouched; `vm stop` discards it only with --force.
func TestSuspendRefusesBadState(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) || !suspendInMountNS(t) {
		return
	}
	in := vmInstance(t)
	// The VMs live on a small tmpfs (private to this test's mount
	// namespace) that the test can fill.
	if err := os.MkdirAll(in.p.VMsDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", in.p.VMsDir(), "tmpfs", 0, "size=900m,mode=0700"); err != nil {
		t.Fatalf("mount tmpfs for vms: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(in.p.VMsDir(), unix.MNT_DETACH) })
	in.ok("banger", "vm", "create", "--start", "--name", "fragile", "--memory", "512M")
	vm := in.inspect("fragile")

	// Disk full while saving.
	filler := filepath.Join(in.p.VMsDir(), "filler")
	var st unix.Statfs_t
	if err := unix.Statfs(in.p.VMsDir(), &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	if err := suspendFill(filler, free-4<<20); err != nil {
		t.Fatalf("fill the vms tmpfs: %v", err)
	}
	_, errOut, code := in.run("banger", "vm", "suspend", "fragile")
	if code == 0 || !strings.Contains(errOut, "keeps running") || !strings.Contains(errOut, "free space") {
		t.Fatalf("suspend on a full disk: exit %d, stderr %q (want a refusal saying the vm keeps running)", code, errOut)
	}
	if cur := in.inspect("fragile"); cur.State != model.StateRunning || cur.PID != vm.PID || !processAlive(vm.PID) {
		t.Fatalf("after a failed suspend: %+v, want the same vm running (pid %d)", cur, vm.PID)
	}
	suspendNoSavedState(t, vm)
	in.ok("banger", "vm", "exec", "fragile", "--", "true")
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}

	in.ok("banger", "vm", "suspend", "fragile")
	statePath := filepath.Join(vm.Dir, "suspend.state")
	orig, err := os.ReadFile(statePath)
	if err != nil || len(orig) < 1<<20 {
		t.Fatalf("saved state: %d bytes, %v", len(orig), err)
	}
	taps := suspendLinks(t)
	refused := func(what string, content []byte, want string) {
		t.Helper()
		if err := os.WriteFile(statePath, content, 0o600); err != nil {
			t.Fatal(err)
		}
		_, errOut, code := in.run("banger", "vm", "resume", "fragile")
		if code == 0 || !strings.Contains(errOut, want) || !strings.Contains(errOut, "vm stop --force fragile") {
			t.Fatalf("resume of a %s state: exit %d, stderr %q (want it refused: %q and the way out)", what, code, errOut, want)
		}
		if cur := in.inspect("fragile"); cur.State != model.StateSuspended || cur.PID != 0 {
			t.Fatalf("after refusing a %s state: %+v, want still suspended", what, cur)
		}
		if out, _ := exec.Command("pgrep", "-f", "qemu-system.*"+vm.Dir).Output(); len(out) > 0 {
			t.Fatalf("a qemu was left for a %s state: %s", what, out)
		}
		if got, err := os.ReadFile(statePath); err != nil || sha256.Sum256(got) != sha256.Sum256(content) {
			t.Fatalf("refused resume changed the %s state file: %v", what, err)
		}
		if now := suspendLinks(t); now != taps {
			t.Fatalf("refused resume changed the host's links:\nbefore %s\nafter  %s", taps, now)
		}
	}
	corrupt := bytes.Clone(orig)
	corrupt[len(corrupt)/2] ^= 0x40
	refused("corrupt", corrupt, "corrupt: sha256")
	refused("truncated", orig[:len(orig)/2], "truncated")
	refused("grown", append(bytes.Clone(orig), 0), "truncated or grown")
	// Put back, the state resumes: the refusals did no harm.
	if err := os.WriteFile(statePath, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	in.ok("banger", "vm", "resume", "fragile")
	if cur := in.inspect("fragile"); cur.State != model.StateRunning || cur.BootID != vm.BootID {
		t.Fatalf("resume of the restored state: %+v", cur)
	}

	// Stopping a suspended VM discards its state: only when asked to.
	in.ok("banger", "vm", "suspend", "fragile")
	_, errOut, code = in.run("banger", "vm", "stop", "fragile")
	if code == 0 || !strings.Contains(errOut, "discards its saved state") {
		t.Fatalf("vm stop of a suspended vm: exit %d, stderr %q (want a refusal naming --force)", code, errOut)
	}
	if cur := in.inspect("fragile"); cur.State != model.StateSuspended {
		t.Fatalf("refused stop changed the state to %s", cur.State)
	}
	in.ok("banger", "vm", "stop", "--force", "fragile")
	if cur := in.inspect("fragile"); cur.State != model.StateStopped {
		t.Fatalf("vm stop --force of a suspended vm: state %s, want stopped", cur.State)
	}
	suspendNoSavedState(t, vm)
	if _, errOut, code := in.run("banger", "vm", "resume", "fragile"); code == 0 || !strings.Contains(errOut, "not suspended") {
		t.Fatalf("resume of a stopped vm: exit %d, stderr %q", code, errOut)
	}
	in.ok("banger", "vm", "rm", "fragile")
}

func suspendExpectLine(t *testing.T, c net.Conn, rd *bufio.Reader, want string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := rd.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != want {
		t.Fatalf("from the guest's connection: %q, %v (want %q)", line, err, want)
	}
}

// suspendExpectEcho sends a line over the guest's connection and expects
// it echoed back.
func suspendExpectEcho(t *testing.T, c net.Conn, rd *bufio.Reader, msg string) {
	t.Helper()
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		t.Fatalf("write to the guest's connection: %v", err)
	}
	suspendExpectLine(t, c, rd, "echo:"+msg)
}

func suspendNoSavedState(t *testing.T, vm model.VM) {
	t.Helper()
	ents, err := os.ReadDir(vm.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "suspend.") {
			t.Fatalf("saved-state file %s left in %s", e.Name(), vm.Dir)
		}
	}
}

// suspendLinks lists the namespace's links (name and index), to show that
// a refused resume created or removed none.
func suspendLinks(t *testing.T) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, i := range ifs {
		fmt.Fprintf(&b, "%d:%s ", i.Index, i.Name)
	}
	return b.String()
}

// suspendFill writes a file of n bytes (real pages on tmpfs).
func suspendFill(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Fallocate(int(f.Fd()), 0, 0, n)
}

// envInMountNS marks a test re-run inside its own mount namespace.
const envInMountNS = "BANGER_TEST_IN_MOUNTNS"

// suspendInMountNS re-runs the test in a private mount namespace (inside
// the network namespace it already has), so the mounts it makes are seen
// by its own processes only. It returns true in the re-run.
func suspendInMountNS(t *testing.T) bool {
	t.Helper()
	if os.Getenv(envInMountNS) == "1" {
		return true
	}
	testutil.RequireBinary(t, "unshare")
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "--", os.Args[0],
		"-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), envInMountNS+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("mount-namespace run of %s:\n%s", t.Name(), out)
	if err != nil {
		t.Fatalf("%s failed inside its mount namespace: %v", t.Name(), err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("%s did not pass inside its mount namespace (skipped or not run)", t.Name())
	}
	return false
}

// BenchmarkVMSuspendResume compares, on one idle 2-vCPU 1 GiB VM and in
// the same run, a cold `banger vm start` (to agent-ready) with `banger vm
// suspend` + `banger vm resume` (to agent-ready with the same boot_id), as
// whole processes, alternating. The daemon runs with --debug so the last
// cold start's and resume's steps are logged with their times.
func BenchmarkVMSuspendResume(b *testing.B) {
	if os.Getenv(testutil.EnvInNetNS) != "1" {
		b.Skip("run inside a network namespace: scripts/bench.sh does (unshare -n)")
	}
	in := vmInstance(b)
	in.ok("banger", "daemon", "stop")
	in.startDaemonWith("--debug")
	in.ok("banger", "vm", "create", "--name", "bench", "--cpus", "2", "--memory", "1G")
	var coldT, suspT, resT []time.Duration
	var stateBytes int64
	for i := 0; i < b.N; i++ {
		start := time.Now()
		in.ok("banger", "vm", "start", "bench")
		coldT = append(coldT, time.Since(start))
		vm := in.inspect("bench")
		in.ok("banger", "vm", "exec", "bench", "--", "true") // idle from here
		start = time.Now()
		in.ok("banger", "vm", "suspend", "bench")
		suspT = append(suspT, time.Since(start))
		if st, err := os.Stat(filepath.Join(vm.Dir, "suspend.state")); err == nil {
			stateBytes = st.Size()
		}
		start = time.Now()
		in.ok("banger", "vm", "resume", "bench")
		resT = append(resT, time.Since(start))
		if got := in.inspect("bench"); got.BootID != vm.BootID || got.State != model.StateRunning {
			b.Fatalf("resumed vm: %+v, want running with boot_id %s", got, vm.BootID)
		}
		in.ok("banger", "vm", "stop", "bench")
	}
	cm, sm, rm := percentile(coldT, 50), percentile(suspT, 50), percentile(resT, 50)
	b.ReportMetric(float64(cm.Milliseconds()), "cold-start-median-ms")
	b.ReportMetric(float64(sm.Milliseconds()), "suspend-median-ms")
	b.ReportMetric(float64(rm.Milliseconds()), "resume-median-ms")
	b.ReportMetric(float64(rm)/float64(cm), "resume/cold")
	b.ReportMetric(float64(stateBytes)/(1<<20), "state-MiB")
	b.Logf("cold %v, suspend %v, resume %v", coldT, suspT, resT)
	b.Logf("last start and resume, step by step:\n%s", suspendStepTimes(readFile(in.p.DaemonLog())))
}

// suspendStepTimes picks the last vm.start and vm.resume operations' step
// lines out of a debug daemon log.
func suspendStepTimes(log string) string {
	var last = map[string][]string{}
	var cur string
	for _, l := range strings.Split(log, "\n") {
		switch {
		case strings.Contains(l, `msg="operation started"`) && (strings.Contains(l, "method=vm.start") || strings.Contains(l, "method=vm.resume")):
			cur = "vm.start"
			if strings.Contains(l, "method=vm.resume") {
				cur = "vm.resume"
			}
			last[cur] = nil
		case strings.Contains(l, `msg="operation finished"`):
			cur = ""
		case cur != "" && (strings.Contains(l, "boot step done") || strings.Contains(l, "vm started") || strings.Contains(l, "vm resumed")):
			f := strings.Fields(l)
			var keep []string
			for _, x := range f {
				if strings.HasPrefix(x, "step=") || strings.HasPrefix(x, "took=") || strings.HasPrefix(x, "msg=") {
					keep = append(keep, x)
				}
			}
			last[cur] = append(last[cur], "  "+strings.Join(keep, " "))
		}
	}
	return "vm.start:\n" + strings.Join(last["vm.start"], "\n") + "\nvm.resume:\n" + strings.Join(last["vm.resume"], "\n")
}
