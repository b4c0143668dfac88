package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
)

// The acceptance line of the foundation issue, as a new user types it.
func TestAcceptanceDaemonLifecycle(t *testing.T) {
	in := newInstance(t)
	in.ok("banger", "daemon", "start")
	var st api.DaemonStatus
	if err := json.Unmarshal([]byte(in.ok("banger", "daemon", "status", "--json")), &st); err != nil {
		t.Fatalf("status --json is not JSON: %v", err)
	}
	if st.PID <= 0 || st.Build.Version != "v0.0.0-e2e" || st.Socket != in.p.Socket() || st.SchemaVersion < 1 {
		t.Fatalf("unexpected status: %+v", st)
	}
	var ops api.OperationsList
	if err := json.Unmarshal([]byte(in.ok("banger", "ops", "ls", "--json")), &ops); err != nil {
		t.Fatalf("ops ls --json is not JSON: %v", err)
	}
	if ops.Operations == nil || len(ops.Operations) != 0 {
		t.Fatalf("expected an empty operations list, got %+v", ops)
	}
	check := in.ok("bangerd", "--check-migrations")
	if !strings.Contains(check, "target schema") {
		t.Fatalf("check-migrations output: %q", check)
	}
	out := in.ok("banger", "daemon", "stop")
	if !strings.Contains(out, "daemon stopped") {
		t.Fatalf("stop said %q", out)
	}
	if _, err := os.Stat(in.p.Socket()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind after stop: %v", err)
	}
	if pid := st.Helper.PID; pid > 0 && processAlive(pid) {
		t.Fatalf("daemon-spawned root helper (pid %d) still running after stop", pid)
	}
}

func TestVersionAndDaemonVersion(t *testing.T) {
	in := newInstance(t)
	out := in.ok("bangerd", "--version")
	if !strings.Contains(out, "v0.0.0-e2e") {
		t.Fatalf("bangerd --version: %q", out)
	}
	var v struct {
		Client struct{ Version, Commit string }
		Daemon *struct{ Version string }
	}
	if err := json.Unmarshal([]byte(in.ok("banger", "version", "--json")), &v); err != nil {
		t.Fatal(err)
	}
	if v.Client.Version != "v0.0.0-e2e" || v.Daemon != nil {
		t.Fatalf("version with no daemon: %+v", v)
	}
	in.ok("banger", "daemon", "start")
	if err := json.Unmarshal([]byte(in.ok("banger", "version", "--json")), &v); err != nil {
		t.Fatal(err)
	}
	if v.Daemon == nil || v.Daemon.Version != "v0.0.0-e2e" {
		t.Fatalf("version with a running daemon lacks its version: %+v", v)
	}
}

func TestStartTwiceStopTwiceAndLock(t *testing.T) {
	in := newInstance(t)
	in.ok("banger", "daemon", "start")
	out := in.ok("banger", "daemon", "start")
	if !strings.Contains(out, "already running") {
		t.Fatalf("second start said %q", out)
	}
	// A second daemon on the same state directory refuses, naming the first.
	pid := readFile(in.p.PidFile())
	_, errOut, code := in.run("bangerd")
	if code == 0 || !strings.Contains(errOut, "already running") || !strings.Contains(errOut, "pid "+strings.TrimSpace(pid)) {
		t.Fatalf("second bangerd: exit %d, stderr %q (want refusal naming pid %s)", code, errOut, pid)
	}
	// The refused daemon must not have removed the first one's socket.
	in.ok("banger", "daemon", "status")
	in.ok("banger", "daemon", "stop")
	out = in.ok("banger", "daemon", "stop")
	if !strings.Contains(out, "not running") {
		t.Fatalf("stop when stopped said %q", out)
	}
	_, errOut, code = in.run("banger", "daemon", "status")
	if code != 1 || !strings.Contains(errOut, "banger daemon start") {
		t.Fatalf("status when stopped: exit %d, %q", code, errOut)
	}
}

func TestCommandsStartTheDaemonAndSaySo(t *testing.T) {
	in := newInstance(t)
	_, errOut, code := in.run("banger", "ops", "ls")
	if code != 0 || !strings.Contains(errOut, "started it") {
		t.Fatalf("ops ls without a daemon: exit %d, stderr %q", code, errOut)
	}
	_, errOut, _ = in.run("banger", "ops", "ls")
	if strings.Contains(errOut, "started it") {
		t.Fatalf("second ops ls started the daemon again: %q", errOut)
	}
}

// An op_id given by the client comes back in the response and appears in the
// daemon's log lines for the request and in the helper's log for the helper
// call it caused.
func TestOpIDThreading(t *testing.T) {
	testutil.RequireRoot(t) // the daemon spawns the root helper only as root
	in := newInstance(t)
	in.startDaemonWith("--debug", "--enable-test-methods")
	const opID = "op-threading-test-42"
	ctx := rpc.WithOpID(context.Background(), opID)
	s, err := rpc.OpenStream(ctx, in.client(), api.MethodDebugSleep, api.SleepParams{Milliseconds: 10, Target: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var result rpc.Frame
	for {
		f, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == rpc.FrameEvent && f.OpID != opID {
			t.Fatalf("event frame carries op_id %q, want %q", f.OpID, opID)
		}
		if f.Type == rpc.FrameResult {
			result = f
			break
		}
	}
	if result.OpID != opID {
		t.Fatalf("result op_id = %q, want %q", result.OpID, opID)
	}
	daemonLines := linesWith(readFile(in.p.DaemonLog()), "debug.sleep")
	if len(daemonLines) < 2 {
		t.Fatalf("expected several daemon log lines for the request, got %d:\n%s", len(daemonLines), readFile(in.p.DaemonLog()))
	}
	for _, l := range daemonLines {
		if !strings.Contains(l, "op_id="+opID) {
			t.Fatalf("daemon log line for the request lacks the op_id: %s", l)
		}
	}
	helperLines := linesWith(readFile(in.p.HelperLog()), "op_id="+opID)
	if len(helperLines) == 0 {
		t.Fatalf("helper log has no line with op_id %s:\n%s", opID, readFile(in.p.HelperLog()))
	}
	// Errors carry it too.
	err = in.client().CallRaw(rpc.WithOpID(context.Background(), "op-err-7"), "no.such.method", nil, nil)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.OpID != "op-err-7" || ae.Code != api.CodeUnimplemented {
		t.Fatalf("error lacks code/op_id: %#v", err)
	}
}

func linesWith(log, sub string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}

func TestOperationsListShowsRunningOperation(t *testing.T) {
	in := newInstance(t)
	in.startDaemonWith("--enable-test-methods")
	c := in.client()
	done := make(chan error, 1)
	go func() {
		ctx := rpc.WithOpID(context.Background(), "op-slow-1")
		_, err := rpc.Invoke(ctx, c, api.MethodDebugSleep, api.SleepParams{Milliseconds: 2000, Target: "slow-vm"})
		done <- err
	}()
	var seen api.Operation
	deadline := time.Now().Add(10 * time.Second)
	for seen.OpID == "" && time.Now().Before(deadline) {
		res, err := rpc.Invoke(context.Background(), c, api.MethodOperationsList, api.Empty{})
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range res.Operations {
			if op.OpID == "op-slow-1" && op.Stage != "" { // listed from its start; its stage follows
				seen = op
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if seen.OpID == "" {
		t.Fatal("running operation never appeared in daemon.operations.list")
	}
	if seen.Method != api.MethodDebugSleep.Name || seen.Target != "slow-vm" || seen.StartedAt.IsZero() || !strings.HasPrefix(seen.Stage, "sleeping") || seen.Total != 4 {
		t.Fatalf("operation entry incomplete: %+v", seen)
	}
	// The CLI shows it too.
	out := in.ok("banger", "ops", "ls")
	if !strings.Contains(out, "op-slow-1") || !strings.Contains(out, "slow-vm") {
		t.Fatalf("banger ops ls during the operation:\n%s", out)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	res, err := rpc.Invoke(context.Background(), c, api.MethodOperationsList, api.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Operations) != 0 {
		t.Fatalf("operation still listed after it ended: %+v", res.Operations)
	}
	// A failed operation leaves the list too.
	_, err = rpc.Invoke(context.Background(), c, api.MethodDebugSleep, api.SleepParams{Milliseconds: -5})
	if api.CodeOf(err) != api.CodeInvalidArgument {
		t.Fatalf("bad params: %v", err)
	}
	if res, err = rpc.Invoke(context.Background(), c, api.MethodOperationsList, api.Empty{}); err != nil || len(res.Operations) != 0 {
		t.Fatalf("failed operation still listed: %+v %v", res.Operations, err)
	}
	// A cancelled one (client went away) as well.
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(300 * time.Millisecond); cancel() }()
	_, _ = rpc.Invoke(ctx, c, api.MethodDebugSleep, api.SleepParams{Milliseconds: 5000})
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if res, err = rpc.Invoke(context.Background(), c, api.MethodOperationsList, api.Empty{}); err == nil && len(res.Operations) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("cancelled operation still listed: %+v", res.Operations)
}

func TestManyConcurrentClients(t *testing.T) {
	in := newInstance(t)
	in.startDaemonWith()
	c := in.client()
	const workers, calls = 50, 100
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				want := fmt.Sprintf("op-w%d-c%d", w, i)
				s, err := rpc.OpenStream(rpc.WithOpID(context.Background(), want), c, api.MethodDaemonPing, api.Empty{})
				if err != nil {
					errs <- err
					return
				}
				f, err := s.Next()
				s.Close()
				if err != nil || f.Type != rpc.FrameResult || f.OpID != want {
					errs <- fmt.Errorf("call %s: frame %+v, err %v", want, f, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// A client running as another, unprivileged uid is refused by the daemon
// socket's permissions and by the root helper's SO_PEERCRED check.
func TestPeerCredentialsRefuseOtherUsers(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "useradd")
	uid, gid := ensureTestUser(t, "banger-e2e-other")

	in := newInstance(t)
	in.startDaemonWith()
	// The test binary, copied where the other user may execute it, acts as
	// the client (see peerClientMain).
	exe := filepath.Join(binDir, "peerclient.test")
	copyFile(t, mustExecutable(t), exe, 0o755)

	out, code := runAs(t, exe, uid, gid, in.p.Socket())
	if code == 0 || !strings.Contains(out, "permission") {
		t.Fatalf("other user reached the daemon socket: exit %d, %s", code, out)
	}

	// A helper whose socket is world-connectable must still refuse the
	// other uid by its kernel credentials.
	sockDir, err := os.MkdirTemp("", "banger-peer-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	os.Chmod(sockDir, 0o755)
	sock := filepath.Join(sockDir, "helper.sock")
	helper := exec.Command(filepath.Join(binDir, "banger-helper"), "--managed", "--owner-uid", "0", "--socket", sock, "--debug")
	helperLog, _ := os.Create(filepath.Join(sockDir, "helper.log"))
	helper.Stdout, helper.Stderr = helperLog, helperLog
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { helper.Process.Kill(); helper.Wait() }()
	waitForSocket(t, sock)
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	out, code = runAs(t, exe, uid, gid, sock)
	if code == 0 || !strings.Contains(out, "permission_denied") || !strings.Contains(out, fmt.Sprintf("uid %d may not use the root helper", uid)) {
		t.Fatalf("other user was not refused by peer credentials: exit %d, %s", code, out)
	}
	// Root is still admitted.
	if _, err := rpc.Invoke(context.Background(), rpc.NewClient(sock), api.MethodHelperPing, api.Empty{}); err != nil {
		t.Fatalf("root refused by helper: %v", err)
	}
}

// peerClientMain runs in a copy of the test binary as another user: it pings
// whatever listens at addr and reports the outcome.
func peerClientMain(addr string) int {
	method := api.MethodDaemonPing
	if strings.HasSuffix(addr, "helper.sock") {
		method = api.MethodHelperPing
	}
	_, err := rpc.Invoke(context.Background(), rpc.NewClient(addr), method, api.Empty{})
	if err != nil {
		fmt.Printf("refused: code=%s err=%v permission\n", api.CodeOf(err), err)
		if api.CodeOf(err) == api.CodePermissionDenied {
			fmt.Println("permission_denied")
		}
		return 1
	}
	fmt.Println("admitted")
	return 0
}

func runAs(t *testing.T, exe string, uid, gid uint32, addr string) (string, int) {
	t.Helper()
	cmd := exec.Command(exe)
	cmd.Env = []string{"BANGER_E2E_PEER_CLIENT=" + addr, "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run as uid %d: %v", uid, err)
	}
	return string(out), code
}

func ensureTestUser(t testing.TB, name string) (uint32, uint32) {
	t.Helper()
	// Tests run in parallel, some in other processes (their network
	// namespace re-runs): one useradd at a time, or the loser finds
	// /etc/passwd locked or the user already there.
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "banger-e2e-useradd.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := user.Lookup(name); err != nil {
		if out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
			t.Fatalf("useradd %s: %v\n%s", name, err, out)
		}
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uint32(uid), uint32(gid)
}

func mustExecutable(t *testing.T) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dst, mode)
}

func waitForSocket(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := rpc.Invoke(context.Background(), rpc.NewClient(path), api.MethodHelperPing, api.Empty{}); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing answered on %s", path)
}

func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestCLIUsageExitCodesHelpAndCompletion(t *testing.T) {
	in := newInstance(t)
	if _, _, code := in.run("banger", "daemon", "nosuch"); code != 2 {
		t.Fatalf("unknown subcommand: exit %d, want 2", code)
	}
	if _, _, code := in.run("banger", "version", "--nosuchflag"); code != 2 {
		t.Fatalf("unknown flag: exit %d, want 2", code)
	}
	if _, _, code := in.run("banger", "version", "extra-arg"); code != 2 {
		t.Fatalf("extra argument: exit %d, want 2", code)
	}
	if _, _, code := in.run("bangerd", "--nosuchflag"); code != 2 {
		t.Fatalf("bangerd unknown flag: exit %d, want 2", code)
	}
	help := in.ok("banger", "daemon", "status", "--help")
	if !strings.Contains(help, "Examples:") || !strings.Contains(help, "--json") {
		t.Fatalf("help lacks examples or --json:\n%s", help)
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		out := in.ok("banger", "completion", sh)
		if !strings.Contains(out, "banger") || len(out) < 500 {
			t.Fatalf("completion %s looks empty: %d bytes", sh, len(out))
		}
	}
}
