package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/doctor"
	"github.com/bangerdev/banger/internal/testutil"
)

// runDoctor runs `banger doctor args…` through Execute with env as the
// whole environment.
func runDoctor(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code = Execute(ctx, Env{
		Stdin:  strings.NewReader(""),
		Stdout: &out,
		Stderr: &errb,
		Getenv: func(k string) string { return env[k] },
	}, append([]string{"doctor"}, args...))
	return code, out.String(), errb.String()
}

func decodeReport(t *testing.T, s string) doctor.Report {
	t.Helper()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, s)
	}
	if _, ok := raw["checks"]; !ok {
		t.Fatalf("--json output has no checks: %s", s)
	}
	if _, ok := raw["ok"]; !ok {
		t.Fatalf("--json output has no ok: %s", s)
	}
	var r doctor.Report
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Checks) == 0 {
		t.Fatalf("no checks in %s", s)
	}
	return r
}

func TestDoctorExitsOneWhenQEMUIsMissing(t *testing.T) {
	env := map[string]string{"BANGER_HOME": t.TempDir(), "PATH": t.TempDir()}
	code, out, errOut := runDoctor(t, env)
	if code != 1 {
		t.Fatalf("exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if !regexp.MustCompile(`^banger: (1 problem blocks|\d+ problems block) running VMs\n$`).MatchString(errOut) {
		t.Fatalf("stderr = %q", errOut)
	}
	if !regexp.MustCompile(`(?m)^✗ qemu +qemu-system-x86_64 is not installed`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^ +fix: .*qemu`).MatchString(out) {
		t.Fatalf("output lacks the failed qemu check and its fix:\n%s", out)
	}
	if !regexp.MustCompile(`\n\d+ checks: \d+ ok, \d+ warnings, [1-9]\d* failed\n$`).MatchString(out) {
		t.Fatalf("output lacks the summary:\n%s", out)
	}

	code, out, _ = runDoctor(t, env, "--json")
	if code != 1 {
		t.Fatalf("--json exit %d, want 1", code)
	}
	r := decodeReport(t, out)
	if r.OK {
		t.Fatal("ok is true with qemu missing")
	}
	if c, _ := r.Find(doctor.CheckQEMU); c.Status != doctor.Fail || c.Fix == "" {
		t.Fatalf("qemu check = %+v", c)
	}
}

// On this machine (root, QEMU and e2fsprogs installed) nothing blocks VMs:
// the stopped daemon is only a warning, and doctor must not start it.
func TestDoctorExitsZeroOnThisHost(t *testing.T) {
	testutil.RequireQEMU(t)
	testutil.RequireRoot(t) // without root, a missing root helper blocks VMs
	home := t.TempDir()
	env := map[string]string{"BANGER_HOME": home, "PATH": os.Getenv("PATH"), "HOME": os.Getenv("HOME")}
	code, out, errOut := runDoctor(t, env)
	if code != 0 {
		t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if !regexp.MustCompile(`(?m)^✓ qemu `).MatchString(out) || !regexp.MustCompile(`(?m)^! daemon +not running`).MatchString(out) {
		t.Fatalf("unexpected output:\n%s", out)
	}
	if errOut != "" {
		t.Fatalf("stderr = %q", errOut)
	}

	code, out, _ = runDoctor(t, env, "--json")
	if code != 0 {
		t.Fatalf("--json exit %d, want 0", code)
	}
	r := decodeReport(t, out)
	if !r.OK {
		t.Fatalf("ok is false: %+v", r.Checks)
	}
	if c, _ := r.Find(doctor.CheckDaemon); c.Status != doctor.Warn {
		t.Fatalf("daemon check = %+v", c)
	}
	if ents, _ := os.ReadDir(home); len(ents) != 0 {
		t.Fatalf("doctor created %s in BANGER_HOME", ents[0].Name())
	}
}

func TestDoctorRejectsArguments(t *testing.T) {
	code, _, errOut := runDoctor(t, map[string]string{"BANGER_HOME": t.TempDir()}, "extra")
	if code != 2 {
		t.Fatalf("exit %d, want 2 (stderr %q)", code, errOut)
	}
}
