package cli

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/toolingplan"
)

func TestPlanCommandWithPackagesFile(t *testing.T) {
	fixtures := filepath.Join("..", "toolingplan", "testdata")
	out, errOut, code := runBanger(t, nil, "plan", filepath.Join(fixtures, "python"), "--json", "--packages", filepath.Join(fixtures, "Packages"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var p toolingplan.Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(p.Steps) != 2 || !p.Steps[0].Satisfied || p.Steps[1].Satisfied || p.Complete ||
		!strings.Contains(p.Steps[1].Reason, "3.12 wanted, 3.11.2 available") {
		t.Fatalf("plan = %+v", p)
	}

	out, _, code = runBanger(t, nil, "plan", filepath.Join(fixtures, "node"), "--packages", filepath.Join(fixtures, "Packages"))
	if code != 0 || !strings.Contains(out, "not satisfiable from the distro: v20.11.1 wanted, 18.19.0 available") ||
		!strings.Contains(out, "nodejs 18.19.0+dfsg-6~deb12u2") {
		t.Fatalf("exit %d, text plan:\n%s", code, out)
	}

	_, errOut, code = runBanger(t, nil, "plan", filepath.Join(fixtures, "broken"), "--packages", filepath.Join(fixtures, "Packages"))
	if code == 0 || !strings.Contains(errOut, "package.json") {
		t.Fatalf("a malformed package.json: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = runBanger(t, nil, "plan", filepath.Join(fixtures, "nope"))
	if code != 2 || !strings.Contains(errOut, "not a directory") {
		t.Fatalf("a missing directory: exit %d, stderr %q", code, errOut)
	}
}

func TestSyncParams(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		host, remote, err string
	}{
		{dir, "dev:relative", "must be absolute"},
		{dir, "dev:/", "not /"},
		{dir, "/no/vm", "is not NAME:/guest/dir"},
		{filepath.Join(dir, "missing"), "dev:/x", "host directory"},
	} {
		if _, err := syncParams(tc.host, tc.remote); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("syncParams(%q, %q) = %v, want %q", tc.host, tc.remote, err, tc.err)
		}
	}
	p, err := syncParams(dir, "dev:/root/src/")
	if err != nil || p.Name != "dev" || p.Guest != "/root/src" || p.Local != dir {
		t.Errorf("syncParams = %+v, %v", p, err)
	}
}
