// Package e2e tests banger as a user runs it: the real binaries, built once
// per test run, as separate processes with their own BANGER_HOME.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
)

// binDir holds banger, bangerd, banger-vsock-agent and banger-helper built for this run.
var binDir string

// Parallel tests: every test that boots VMs in its own network namespace
// and home calls t.Parallel(), so the VM tests run GOMAXPROCS at a time
// once the serial ones are done (a TCG boot leaves a core idle for much of
// its time). Serial stay the tests that measure the host as a whole or
// time themselves (soak, the DoS floods), the ones sharing one owner uid
// and counting its processes (mounts), and the installs (update, systemd).

// envBinDir hands the built binaries' directory to this binary's re-runs.
const envBinDir = "BANGER_E2E_BIN_DIR"

func TestMain(m *testing.M) {
	if addr := os.Getenv("BANGER_E2E_PEER_CLIENT"); addr != "" {
		os.Exit(peerClientMain(addr))
	}
	if spec := os.Getenv(envHostileRacer); spec != "" {
		os.Exit(hostileOwnerRacerMain(spec))
	}
	if dir := os.Getenv(envSystemdBinDir); dir != "" {
		// Re-executed inside the systemd container: the binaries were built
		// by the run outside and are bind-mounted at the same path.
		binDir = dir
		os.Exit(m.Run())
	}
	if dir := os.Getenv(envBinDir); dir != "" {
		// A re-run of one test inside its own network namespace
		// (testutil.InNetNS): the parent built the binaries already, and
		// rebuilding (a link of four binaries, stamped with the time) cost
		// seconds per VM test.
		binDir = dir
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "banger-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cmd := exec.Command("bash", "../scripts/build.sh")
	cmd.Env = append(os.Environ(), "OUT="+dir, "VERSION=v0.0.0-e2e")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build binaries: %v\n%s", err, out)
		os.Exit(1)
	}
	binDir = dir
	os.Setenv(envBinDir, dir) // inherited by the network-namespace re-runs
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// instance is one isolated banger installation (its own BANGER_HOME).
type instance struct {
	t    testing.TB
	home string
	p    paths.User
	// extraEnv is added to every command's environment (later wins).
	extraEnv []string
}

func newInstance(t *testing.T) *instance {
	t.Helper()
	in := newInstanceFromHome(t, t.TempDir())
	t.Cleanup(in.cleanup)
	return in
}

func newInstanceFromHome(t testing.TB, home string) *instance {
	t.Helper()
	p := testutil.UserPaths(t, home)
	return &instance{t: t, home: home, p: p}
}

func (in *instance) env() []string {
	env := append(os.Environ(), "BANGER_HOME="+in.home, "BANGER_DAEMON_BIN="+filepath.Join(binDir, "bangerd"))
	return append(env, in.extraEnv...)
}

// run executes a banger binary and returns stdout, stderr and exit code.
func (in *instance) run(bin string, args ...string) (string, string, int) {
	in.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, bin), args...)
	cmd.Env = in.env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			in.t.Fatalf("run %s %v: %v", bin, args, err)
		}
		code = ee.ExitCode()
	}
	return stdout.String(), stderr.String(), code
}

// ok runs a command that must succeed and returns its stdout.
func (in *instance) ok(bin string, args ...string) string {
	in.t.Helper()
	out, errOut, code := in.run(bin, args...)
	if code != 0 {
		in.t.Fatalf("%s %s: exit %d\nstdout: %s\nstderr: %s\ndaemon log:\n%s", bin, strings.Join(args, " "), code, out, errOut, readFile(in.p.DaemonLog()))
	}
	return out
}

func (in *instance) client() *rpc.Client { return rpc.NewClient(in.p.Socket()) }

// startDaemonWith starts bangerd directly with extra flags (e.g. test methods).
func (in *instance) startDaemonWith(flags ...string) {
	in.t.Helper()
	if err := in.p.Ensure(); err != nil {
		in.t.Fatal(err)
	}
	args := append([]string{"--ready-fd", "3"}, flags...)
	cmd := exec.Command(filepath.Join(binDir, "bangerd"), args...)
	cmd.Env = in.env()
	logf, err := os.OpenFile(in.p.DaemonLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		in.t.Fatal(err)
	}
	defer logf.Close()
	pr, pw, _ := os.Pipe()
	cmd.Stdout, cmd.Stderr, cmd.ExtraFiles = logf, logf, []*os.File{pw}
	if err := cmd.Start(); err != nil {
		in.t.Fatal(err)
	}
	pw.Close()
	go cmd.Wait()
	line := make(chan string, 1)
	go func() {
		b := make([]byte, 16)
		n, _ := pr.Read(b)
		line <- string(b[:n])
	}()
	select {
	case l := <-line:
		if !strings.HasPrefix(l, "ready") {
			in.t.Fatalf("bangerd did not become ready; log:\n%s", readFile(in.p.DaemonLog()))
		}
	case <-time.After(20 * time.Second):
		in.t.Fatalf("bangerd not ready after 20s; log:\n%s", readFile(in.p.DaemonLog()))
	}
}

// cleanup stops the daemon (and through it a helper it spawned).
func (in *instance) cleanup() {
	cmd := exec.Command(filepath.Join(binDir, "banger"), "daemon", "stop")
	cmd.Env = in.env()
	_ = cmd.Run()
}

func readFile(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return string(b)
}
