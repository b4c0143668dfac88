package updater

import (
	"context"
	"errors"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"
)

// scriptedSystemctl answers `systemctl is-active` from a list of states and
// records every invocation.
type scriptedSystemctl struct {
	states []string
	calls  []string
	fail   map[string]error
	output map[string]string
}

func (s *scriptedSystemctl) run(_ context.Context, name string, args ...string) ([]byte, error) {
	line := name + " " + strings.Join(args, " ")
	s.calls = append(s.calls, line)
	if err := s.fail[line]; err != nil {
		return nil, err
	}
	if out, ok := s.output[line]; ok {
		return []byte(out), nil
	}
	if len(args) > 0 && args[0] == "is-active" {
		st := s.states[0]
		if len(s.states) > 1 {
			s.states = s.states[1:]
		}
		if st != "active" {
			return []byte(st + "\n"), errors.New("exit status 3")
		}
		return []byte("active\n"), nil
	}
	return nil, nil
}

func TestSystemdServicesRestart(t *testing.T) {
	sc := &scriptedSystemctl{states: []string{"activating", "active"}}
	s := SystemdServices{Run: sc.run, PollInterval: time.Millisecond}
	ctx := context.Background()
	if err := s.RestartHelper(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.RestartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitDaemonReady(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"systemctl reset-failed bangerd-root.service",
		"systemctl restart bangerd-root.service",
		"systemctl reset-failed bangerd.service",
		"systemctl restart bangerd.service",
		"systemctl is-active bangerd.service",
		"systemctl is-active bangerd.service",
	}
	if !reflect.DeepEqual(sc.calls, want) {
		t.Fatalf("calls %q, want %q", sc.calls, want)
	}

	sc = &scriptedSystemctl{fail: map[string]error{"systemctl restart bangerd.service": errors.New("job failed")}}
	s.Run = sc.run
	if err := s.RestartDaemon(ctx); err == nil || !strings.Contains(err.Error(), "bangerd.service") {
		t.Fatalf("failed restart: %v", err)
	}

	// A failed reset-failed is reported, and no restart is attempted.
	sc = &scriptedSystemctl{fail: map[string]error{"systemctl reset-failed bangerd-root.service": errors.New("access denied")}}
	s.Run = sc.run
	if err := s.RestartHelper(ctx); err == nil || !strings.Contains(err.Error(), "clear its failed state") || !strings.Contains(err.Error(), "access denied") {
		t.Fatalf("failed reset-failed: %v", err)
	}
	if want := []string{"systemctl reset-failed bangerd-root.service"}; !reflect.DeepEqual(sc.calls, want) {
		t.Fatalf("calls %q, want %q", sc.calls, want)
	}
}

func TestSystemdServicesWaitFailures(t *testing.T) {
	ctx := context.Background()
	journal := "journalctl --no-pager --output cat --lines 10 --unit bangerd.service"
	sc := &scriptedSystemctl{states: []string{"activating", "failed"},
		output: map[string]string{journal: "bangerd: open store: disk full\n"}}
	s := SystemdServices{Run: sc.run, PollInterval: time.Millisecond, ReadyTimeout: 5 * time.Second}
	start := time.Now()
	// The error says why: the unit's last log lines.
	if err := s.WaitDaemonReady(ctx); err == nil || !strings.Contains(err.Error(), "the unit failed") ||
		!strings.Contains(err.Error(), "open store: disk full") {
		t.Fatalf("failed unit: %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("a failed unit did not end the wait at once")
	}
	// An unreadable journal leaves the plain error.
	sc = &scriptedSystemctl{states: []string{"failed"}, fail: map[string]error{journal: errors.New("no journal")}}
	s.Run = sc.run
	if err := s.WaitDaemonReady(ctx); err == nil || err.Error() != "wait for bangerd.service: the unit failed" {
		t.Fatalf("failed unit, no journal: %v", err)
	}

	probes := 0
	sc = &scriptedSystemctl{states: []string{"active"}}
	s = SystemdServices{
		Run: sc.run, PollInterval: 5 * time.Millisecond, ReadyTimeout: 100 * time.Millisecond,
		Probe: func(context.Context) error { probes++; return errors.New("connection refused") },
	}
	if err := s.WaitDaemonReady(ctx); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("probe never passing: %v", err)
	}
	if probes < 2 {
		t.Fatalf("probe ran %d times", probes)
	}
}

func TestExecRunnerReportsOutput(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	out, err := ExecRunner(context.Background(), sh, "-c", "echo hello")
	if err != nil || strings.TrimSpace(string(out)) != "hello" {
		t.Fatalf("out %q err %v", out, err)
	}
	_, err = ExecRunner(context.Background(), sh, "-c", "echo schema too new >&2; exit 3")
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 3 || !strings.Contains(err.Error(), "schema too new") {
		t.Fatalf("err = %v", err)
	}
}
