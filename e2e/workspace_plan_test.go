package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/testutil"
)

// envPlanDir carries the parent's plan (made with the network) into the
// network-namespace run of TestWorkspacePlanImage.
const envPlanDir = "BANGER_E2E_PLAN_DIR"

// wsRun runs banger in dir with a timeout of its own (a plan image build
// takes minutes, a run tens of seconds).
func wsRun(t *testing.T, in *instance, dir string, timeout time.Duration, args ...string) (string, string, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "banger"), args...)
	cmd.Env, cmd.Dir = in.env(), dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("banger %s (in %s): %v\nstdout: %s\nstderr: %s\ndaemon log:\n%s", strings.Join(args, " "), dir, err, stdout.String(), stderr.String(), readFile(in.p.DaemonLog()))
	}
	return stdout.String(), stderr.String(), time.Since(start)
}

// planOutput is what banger plan --build --json prints.
type planOutput struct {
	Packages []string `json:"packages"`
	Hash     string   `json:"hash"`
	Steps    []struct {
		Tool      string `json:"tool"`
		Package   string `json:"package"`
		Available string `json:"available"`
		Satisfied bool   `json:"satisfied"`
		Reason    string `json:"reason"`
	} `json:"steps"`
	Image  *model.Image `json:"image"`
	Cached bool         `json:"cached"`
}

// TestWorkspacePlanImage: a Go project (go.mod: go 1.19, and an .nvmrc
// asking for a node Debian does not have) run with vm run --workspace boots
// the plan image, in which `go version` is bookworm's golang-go; the
// missing tool is said on stderr and does not stop the run; a second run
// reuses the image (same created_at, no build).
//
// The plan image is built with the network, outside the test's network
// namespace, by `banger plan --build` (the same image.plan call vm run
// makes), and kept in the fixture cache (BANGER_TEST_CACHE/plan-images),
// so a machine pays the build once. The VM
// runs inside the namespace from the test's own home, where the plan is
// resolved from a Packages file holding what the parent's verified plan
// found.
func TestWorkspacePlanImage(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireQEMU(t)
	kernel, modules := testutil.Kernel(t)
	image := testutil.Image(t)
	if os.Getenv(testutil.EnvInNetNS) != "1" {
		cache := os.Getenv("BANGER_TEST_CACHE")
		testutil.Require(t, cache != "", "BANGER_TEST_CACHE must name the fixture cache (scripts/fixtures.sh sets it)")
		share, err := os.MkdirTemp("", "banger-e2e-plan-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(share) })
		proj := filepath.Join(share, "proj")
		if err := os.MkdirAll(proj, 0o755); err != nil {
			t.Fatal(err)
		}
		write := func(name, data string) {
			if err := os.WriteFile(filepath.Join(proj, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write("go.mod", "module example.com/plandemo\n\ngo 1.19\n")
		write(".nvmrc", "99\n") // no Debian suite has node 99
		write("main.go", "package main\n\nfunc main() {}\n")
		// The build runs in a home of the test's own; the image it made is
		// kept in the fixture cache under its plan name, so the next run on
		// this machine finds it there and builds nothing.
		b := newInstance(t)
		out, errOut, _ := wsRun(t, b, proj, 2*time.Minute, "plan", "--json")
		var plan planOutput
		if err := json.Unmarshal([]byte(out), &plan); err != nil {
			t.Fatalf("plan --json: %v\n%s\nstderr: %s", err, out, errOut)
		}
		cached := filepath.Join(cache, "plan-images", "debian-bookworm-plan-"+plan.Hash[:8]+".ext4")
		if _, err := os.Stat(cached); err != nil {
			out, errOut, took := wsRun(t, b, proj, 15*time.Minute, "plan", "--build", "--json")
			plan = planOutput{}
			if err := json.Unmarshal([]byte(out), &plan); err != nil {
				t.Fatalf("plan --build --json: %v\n%s\nstderr: %s", err, out, errOut)
			}
			t.Logf("plan --build took %s", took.Round(time.Millisecond))
			if plan.Image == nil || plan.Cached || !strings.Contains(plan.Image.Source, "plan:golang-go=") || plan.Image.Name != "debian-bookworm-plan-"+plan.Hash[:8] {
				t.Fatalf("plan image: %+v cached %v (hash %s)", plan.Image, plan.Cached, plan.Hash)
			}
			// Asked again, it is found, not built.
			out, _, took = wsRun(t, b, proj, 2*time.Minute, "plan", "--build", "--json")
			var again planOutput
			if err := json.Unmarshal([]byte(out), &again); err != nil || !again.Cached || again.Image == nil || !again.Image.CreatedAt.Equal(plan.Image.CreatedAt) {
				t.Fatalf("second plan --build: %+v, %v; want the same image, cached", again.Image, err)
			}
			t.Logf("second plan --build (cached) took %s", took.Round(time.Millisecond))
			if err := os.MkdirAll(filepath.Dir(cached), 0o755); err != nil {
				t.Fatal(err)
			}
			if o, err := exec.Command("sh", "-ec", `cp --sparse=always "$1" "$2.tmp" && mv "$2.tmp" "$2"`, "sh", plan.Image.Path, cached).CombinedOutput(); err != nil {
				t.Fatalf("keep the plan image in the fixture cache: %v\n%s", err, o)
			}
		} else {
			t.Logf("plan image found in the fixture cache: %s", cached)
		}
		planName := "debian-bookworm-plan-" + plan.Hash[:8]
		var idx strings.Builder
		for _, s := range plan.Steps {
			if s.Package != "" && s.Available != "" {
				fmt.Fprintf(&idx, "Package: %s\nVersion: %s\nArchitecture: amd64\n\n", s.Package, s.Available)
			}
		}
		for name, data := range map[string]string{"Packages": idx.String(), "image": cached, "name": planName} {
			if err := os.WriteFile(filepath.Join(share, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Setenv(envPlanDir, share)
	}
	if !testutil.InNetNS(t) {
		return
	}
	share := os.Getenv(envPlanDir)
	proj := filepath.Join(share, "proj")
	planImage, planName := readFile(filepath.Join(share, "image")), readFile(filepath.Join(share, "name"))
	in := newInstance(t)
	in.ok("banger", "kernel", "import", "debian-cloud", kernel, "--modules", modules)
	in.ok("banger", "image", "import", "debian-bookworm", image)
	in.ok("banger", "image", "import", planName, planImage)
	created := func() time.Time {
		var img model.Image
		if err := json.Unmarshal([]byte(in.ok("banger", "image", "inspect", planName, "--json")), &img); err != nil {
			t.Fatal(err)
		}
		return img.CreatedAt
	}
	before := created()

	goVersion := regexp.MustCompile(`go version go1\.19(\.[0-9]+)? linux/amd64`)
	args := []string{"vm", "run", "--rm", "--workspace", "--plan-packages", filepath.Join(share, "Packages"), "--", "go", "version"}
	for i := range 2 {
		out, errOut, took := wsRun(t, in, proj, 5*time.Minute, args...)
		t.Logf("run %d took %s; stderr:\n%s", i+1, took.Round(time.Millisecond), errOut)
		if !goVersion.MatchString(out) {
			t.Fatalf("run %d: go version printed %q, want bookworm's go1.19", i+1, out)
		}
		if !strings.Contains(errOut, "plan: image "+planName+" reused") {
			t.Errorf("run %d: stderr does not say the plan image was reused:\n%s", i+1, errOut)
		}
		if !strings.Contains(errOut, "plan: node (.nvmrc): not satisfiable from the distro: 99 wanted") {
			t.Errorf("run %d: stderr does not name the unsatisfiable tool plainly:\n%s", i+1, errOut)
		}
	}
	if after := created(); !after.Equal(before) {
		t.Errorf("plan image rebuilt: created_at %s, then %s", before, after)
	}

	// --no-plan keeps the base image (created, not booted: one boot less).
	_, errOut, _ := wsRun(t, in, proj, 2*time.Minute, "vm", "create", "--name", "noplan", "--workspace", "--no-plan")
	var vm model.VM
	if err := json.Unmarshal([]byte(in.ok("banger", "vm", "inspect", "noplan", "--json")), &vm); err != nil {
		t.Fatal(err)
	}
	if vm.Image != "debian-bookworm" || strings.Contains(errOut, "plan:") {
		t.Errorf("--no-plan: vm image %q, stderr %q; want debian-bookworm and no plan", vm.Image, errOut)
	}
	in.ok("banger", "vm", "rm", "-f", "noplan")
}
