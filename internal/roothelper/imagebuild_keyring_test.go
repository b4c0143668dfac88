package roothelper_test

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/testutil"
)

// envNoKeyringNS marks the re-executed run inside a mount namespace where
// the host has no Debian keyring and no apt sources.
const envNoKeyringNS = "BANGER_TEST_NO_KEYRING_NS"

// TestImageBuildRefusesWithoutKeyring: on a host with nothing to verify
// Debian's archive with, the helper refuses an image build before any work
// (no debootstrap, no work dir, nothing in the owner's store) and says how
// to fix it. The host's keyrings and apt sources are hidden under tmpfs in
// a private mount namespace; the real host is not touched.
func TestImageBuildRefusesWithoutKeyring(t *testing.T) {
	testutil.RequireRoot(t)
	if os.Getenv(envNoKeyringNS) != "1" {
		testutil.RequireBinary(t, "unshare")
		cmd := exec.Command("unshare", "-m", "--propagation", "private", "--", "sh", "-c",
			`for d in /usr/share/keyrings /etc/apt; do if [ -d "$d" ]; then mount -t tmpfs none "$d" || exit 1; fi; done; exec "$@"`,
			"sh", os.Args[0], "-test.run", "^TestImageBuildRefusesWithoutKeyring$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), envNoKeyringNS+"=1")
		out, err := cmd.CombinedOutput()
		t.Logf("mount-namespace run:\n%s", out)
		if err != nil || !strings.Contains(string(out), "--- PASS: TestImageBuildRefusesWithoutKeyring") {
			t.Fatalf("failed inside its mount namespace: %v", err)
		}
		return
	}
	if _, err := os.Stat("/usr/share/keyrings/debian-archive-keyring.gpg"); err == nil {
		t.Fatal("the keyring is still visible: the namespace set-up did not hide it")
	}
	home := ownerHome(t, ownerUID, ownerUID)
	c, _, _ := startHelper(t, ownerUID)
	before := workDirs(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var got error
	if err := asUser(t, ownerUID, ownerUID, func() error {
		_, got = c.BuildImage(ctx, "debian-bookworm", nil)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "build without a keyring", got, api.CodeFailedPrecondition)
	if got == nil || !strings.Contains(got.Error(), "apt-get install debian-archive-keyring") {
		t.Fatalf("error does not say how to fix it: %v", got)
	}
	if ents, err := os.ReadDir(home); err != nil || len(ents) != 0 {
		t.Errorf("BANGER_HOME after the refused build: %d entries, err %v; want it empty", len(ents), err)
	}
	if after := workDirs(t); !slices.Equal(before, after) {
		t.Errorf("work dirs after the refused build: %v, before: %v", after, before)
	}
}
