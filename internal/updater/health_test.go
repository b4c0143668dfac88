package updater

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeDoctorBin writes an executable "banger" that prints report and exits
// with code, recording its arguments beside itself.
func fakeDoctorBin(t *testing.T, report string, code int) (bin, argsFile string) {
	t.Helper()
	dir := t.TempDir()
	bin, argsFile = filepath.Join(dir, "banger"), filepath.Join(dir, "args")
	script := fmt.Sprintf("#!/bin/sh\necho \"$@\" > %s\necho 'doctor: log line' >&2\ncat <<'JSON'\n%s\nJSON\nexit %d\n", argsFile, report, code)
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, argsFile
}

const (
	healthyReport = `{"checks":[{"name":"kvm","status":"fail","detail":"PVM"},{"name":"store","status":"ok","detail":"schema 9"},{"name":"daemon","status":"ok","detail":"running"},{"name":"root helper","status":"warn","detail":"slow"}],"ok":false}`
	sickReport    = `{"checks":[{"name":"store","status":"ok","detail":""},{"name":"daemon","status":"fail","detail":"not answering on its socket"},{"name":"root helper","status":"ok","detail":""}],"ok":false}`
	partialReport = `{"checks":[{"name":"store","status":"ok","detail":""},{"name":"daemon","status":"ok","detail":""}],"ok":true}`
)

// The health check runs the installed banger's own doctor and judges only
// the install's checks.
func TestInstalledDoctor(t *testing.T) {
	cases := []struct {
		name, report string
		code         int
		wantErr      string
	}{
		{"host failures only", healthyReport, 1, ""},
		{"daemon fails", sickReport, 1, "daemon: not answering on its socket"},
		{"a check missing", partialReport, 0, "root helper: not checked"},
		{"no report", "not json", 0, "printed no report"},
		{"crashed", healthyReport, 2, "exit status 2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bin, argsFile := fakeDoctorBin(t, c.report, c.code)
			err := InstalledDoctor(bin, nil)(context.Background())
			if c.wantErr == "" && err != nil {
				t.Fatalf("healthy install judged sick: %v", err)
			}
			if c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("err = %v, want %q", err, c.wantErr)
			}
			args, _ := os.ReadFile(argsFile)
			if strings.TrimSpace(string(args)) != "doctor --json" {
				t.Fatalf("ran %s with %q", bin, args)
			}
		})
	}
}

// Inside Run, the doctor is the installed binary after the swap: the new
// release's banger, not the one that started the update.
func TestRunHealthCheckRunsTheNewBanger(t *testing.T) {
	e := newUpdateEnv(t)
	newCLI := "#!/bin/sh\ncat <<'JSON'\n" + healthyReport + "\nJSON\nexit 1\n"
	e.rs.addRelease("v0.3.0", makeTarball(t, releaseBins(newCLI, fakeBangerd("v0.3.0", 0, "new"), "agent3", "helper3")), true)
	var ran []string
	e.deps.Doctor = InstalledDoctor(e.tg.Banger, func(ctx context.Context, name string, args ...string) ([]byte, error) {
		ran = append(ran, name)
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		if string(b) != newCLI {
			return nil, fmt.Errorf("doctor ran the old banger")
		}
		return StdoutRunner(ctx, name, args...)
	})
	res, err := Run(context.Background(), e.opts, e.deps)
	if err != nil || !res.Installed {
		t.Fatalf("%+v, %v", res, err)
	}
	if len(ran) != 1 || ran[0] != e.tg.Banger {
		t.Fatalf("doctor runs %v, want one of %s", ran, e.tg.Banger)
	}
}
