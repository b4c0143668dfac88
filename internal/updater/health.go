package updater

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/doctor"
)

// InstallChecks are the doctor checks that decide whether an updated
// install is healthy. Host findings (a missing debootstrap, low disk) are
// the same before and after an update and do not roll it back.
var InstallChecks = []string{doctor.CheckStore, doctor.CheckDaemon, doctor.CheckHelper}

// InstalledDoctor is the post-update health check: it runs the installed
// (new) banger's own `doctor --json`, so the check is the new release's,
// and fails when any of InstallChecks fails or is missing. run captures the
// program's stdout; nil means StdoutRunner.
func InstalledDoctor(banger string, run CommandRunner) func(context.Context) error {
	if run == nil {
		run = StdoutRunner
	}
	return func(ctx context.Context) error {
		out, err := run(ctx, banger, "doctor", "--json")
		var ee *exec.ExitError
		// doctor exits 1 when any check fails; its report says which.
		if err != nil && (!errors.As(err, &ee) || ee.ExitCode() != 1) {
			return fmt.Errorf("run %s doctor --json: %w", banger, err)
		}
		var rep doctor.Report
		dec := json.NewDecoder(bytes.NewReader(out))
		if derr := dec.Decode(&rep); derr != nil || len(rep.Checks) == 0 {
			return fmt.Errorf("%s doctor --json printed no report (%q): %w", banger, firstLine(out), errors.Join(err, derr))
		}
		var failed []string
		for _, name := range InstallChecks {
			c, ok := rep.Find(name)
			switch {
			case !ok:
				failed = append(failed, fmt.Sprintf("%s: not checked", name))
			case c.Status == doctor.Fail:
				failed = append(failed, fmt.Sprintf("%s: %s", name, c.Detail))
			}
		}
		if len(failed) > 0 {
			return errors.New(strings.Join(failed, "; "))
		}
		return nil
	}
}

// StdoutRunner runs a program, inheriting the environment, and returns its
// stdout alone (for machine-readable output); stderr goes into the error.
func StdoutRunner(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = msg[len(msg)-2000:]
		}
		return stdout.Bytes(), fmt.Errorf("%s %s: %w (%s)", name, strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}
