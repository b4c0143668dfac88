package roothelper_test

import (
	"context"
	"crypto/sha256"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/testutil"
)

// A plan image request is the owner's (or a compromised daemon's) words
// reaching debootstrap's argv as root: hostile names, versions and counts
// are refused before any work, and nothing is created anywhere.
func TestImagePlanRefusesHostilePlans(t *testing.T) {
	testutil.RequireRoot(t)
	home := ownerHome(t, ownerUID, ownerUID)
	c, sock, _ := startHelper(t, ownerUID)
	before := workDirs(t)
	sentinels := []string{"/etc/passwd", "/etc/shadow", "/etc/hosts"}
	sums := map[string][32]byte{}
	for _, p := range sentinels {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		sums[p] = sha256.Sum256(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var many []api.PlanPackage
	for i := range 1000 {
		many = append(many, api.PlanPackage{Name: "pkg" + strconv.Itoa(i), Version: "1.0"})
	}
	for _, tc := range []struct {
		what string
		base string
		pkgs []api.PlanPackage
		code string
		says string
	}{
		{"path as name", "debian-bookworm", []api.PlanPackage{{Name: "../../etc/passwd", Version: "1.0"}}, api.CodeInvalidArgument, "not a Debian package name"},
		{"shell in name", "debian-bookworm", []api.PlanPackage{{Name: "foo;rm -rf /", Version: "1.0"}}, api.CodeInvalidArgument, "not a Debian package name"},
		{"option as name", "debian-bookworm", []api.PlanPackage{{Name: "--root=/", Version: "1.0"}}, api.CodeInvalidArgument, "not a Debian package name"},
		{"list in name", "debian-bookworm", []api.PlanPackage{{Name: "jq,openssh-server", Version: "1.0"}}, api.CodeInvalidArgument, "not a Debian package name"},
		{"option as version", "debian-bookworm", []api.PlanPackage{{Name: "golang-go", Version: "--force-yes"}}, api.CodeInvalidArgument, "not a Debian version"},
		{"absurd count", "debian-bookworm", many, api.CodeInvalidArgument, "at most 32"},
		{"nothing", "debian-bookworm", nil, api.CodeInvalidArgument, "no packages"},
		{"oci base", "alpine", []api.PlanPackage{{Name: "golang-go", Version: "2:1.19~1"}}, api.CodeInvalidArgument, "pull it instead"},
		{"path base", "../debian-bookworm", []api.PlanPackage{{Name: "golang-go", Version: "2:1.19~1"}}, api.CodeInvalidArgument, "invalid image name"},
	} {
		var got error
		if err := asUser(t, ownerUID, ownerUID, func() error {
			_, got = c.BuildPlanImage(ctx, tc.base, tc.pkgs, nil)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		wantCode(t, "owner plans "+tc.what, got, tc.code)
		if got != nil && !strings.Contains(got.Error(), tc.says) {
			t.Errorf("%s: %v, want it to say %q", tc.what, got, tc.says)
		}
	}
	// The helper picks the name and the path: extra fields are refused whole.
	err := rpc.NewClient(sock).CallRaw(ctx, api.MethodHelperImagePlan.Name, map[string]any{
		"base": "debian-bookworm", "packages": []map[string]string{{"name": "jq", "version": "1.6-2.1"}}, "name": "../../etc",
	}, nil)
	wantCode(t, "plan with a name field", err, api.CodeInvalidArgument)

	var stray error
	if err := asUser(t, strayUID, strayUID, func() error {
		_, stray = c.BuildPlanImage(ctx, "debian-bookworm", []api.PlanPackage{{Name: "jq", Version: "1.6-2.1"}}, nil)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "stray uid plans", stray, api.CodePermissionDenied)

	if ents, err := os.ReadDir(home); err != nil || len(ents) != 0 {
		t.Errorf("BANGER_HOME after refused plans: %d entries, err %v; want it empty", len(ents), err)
	}
	if after := workDirs(t); !slices.Equal(before, after) {
		t.Errorf("work dirs after refused plans: %v, before: %v", after, before)
	}
	for _, p := range sentinels {
		b, err := os.ReadFile(p)
		if err != nil || sha256.Sum256(b) != sums[p] {
			t.Errorf("%s changed (err %v)", p, err)
		}
	}
}
