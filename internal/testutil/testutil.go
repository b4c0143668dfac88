// Package testutil holds the gates and fixtures shared by banger's tiered
// tests. A gate skips with a reason on a developer machine that lacks the
// environment, but fails under CI (CI=true), where the environment must be
// provided: a skip there would hide a failure.
package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/paths"
)

// Env names the fixtures that scripts/test prepares with banger itself.
const (
	EnvKernel  = "BANGER_TEST_KERNEL"  // path to a bootable vmlinuz (Debian cloud kernel)
	EnvModules = "BANGER_TEST_MODULES" // its /lib/modules/<version> directory
	EnvImage   = "BANGER_TEST_IMAGE"   // ext4 rootfs of the default image (Debian with sshd)
	EnvInNetNS = "BANGER_TEST_IN_NETNS"
	// EnvImageSystemd is the ext4 rootfs of debian-bookworm-systemd, an
	// image whose own init (systemd) boots it in --init image mode.
	EnvImageSystemd = "BANGER_TEST_IMAGE_SYSTEMD"
)

// InCI reports whether the tests run under CI, where no gate may skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require skips (or under CI fails) the test unless ok.
func Require(t testing.TB, ok bool, reason string) {
	t.Helper()
	if ok {
		return
	}
	if InCI() {
		t.Fatalf("CI must provide this test's environment: %s", reason)
	}
	t.Skipf("skipping: %s", reason)
}

// RequireRoot gates tests that need root (netns, users, mounts, the helper).
func RequireRoot(t testing.TB) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "needs root")
}

// RequireBinary gates tests on a program being on PATH and returns its path.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Require(t, err == nil, name+" is not installed (scripts/test installs it)")
	return p
}

// RequireQEMU gates real-VM tests on qemu-system-x86_64.
func RequireQEMU(t testing.TB) string {
	t.Helper()
	return RequireBinary(t, "qemu-system-x86_64")
}

// Kernel returns the test kernel and its modules directory prepared by
// scripts/test (banger kernel pull).
func Kernel(t testing.TB) (vmlinuz, modules string) {
	t.Helper()
	vmlinuz, modules = os.Getenv(EnvKernel), os.Getenv(EnvModules)
	Require(t, fileExists(vmlinuz) && fileExists(modules), EnvKernel+" and "+EnvModules+" must name the test kernel (scripts/test sets them)")
	return vmlinuz, modules
}

// Image returns the default test image prepared by scripts/test.
func Image(t testing.TB) string {
	t.Helper()
	img := os.Getenv(EnvImage)
	Require(t, fileExists(img), EnvImage+" must name the default test image (scripts/test sets it)")
	return img
}

// SystemdImage returns the systemd test image prepared by scripts/test
// (banger image build debian-bookworm-systemd).
func SystemdImage(t testing.TB) string {
	t.Helper()
	img := os.Getenv(EnvImageSystemd)
	Require(t, fileExists(img), EnvImageSystemd+" must name the systemd test image (scripts/test sets it)")
	return img
}

// InNetNS runs the calling test in a private network namespace. Outside one,
// it re-executes the test binary for just this test under `unshare -n`
// (loopback up), fails t if that run failed, and returns false: the caller
// returns at once. Inside, it returns true and the test body runs. Anything
// that makes bridges or taps or talks to VM addresses starts with
//
//	if !testutil.InNetNS(t) { return }
func InNetNS(t *testing.T) bool {
	t.Helper()
	if os.Getenv(EnvInNetNS) == "1" {
		return true
	}
	RequireRoot(t)
	RequireBinary(t, "unshare")
	RequireBinary(t, "ip")
	args := []string{"-n", "--", "sh", "-c", `ip link set lo up && exec "$@"`, "sh", os.Args[0],
		"-test.run", "^" + regexpQuote(t.Name()) + "$", "-test.v", "-test.count=1"}
	cmd := exec.Command("unshare", args...)
	cmd.Env = append(os.Environ(), EnvInNetNS+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("network-namespace run of %s:\n%s", t.Name(), out)
	if err != nil {
		t.Fatalf("%s failed inside its network namespace: %v", t.Name(), err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("%s did not pass inside its network namespace (skipped or not run)", t.Name())
	}
	return false
}

func regexpQuote(name string) string {
	// Subtests are separated by '/', which -test.run splits on; quote the rest.
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = quoteMeta(p)
	}
	return strings.Join(parts, "$/^")
}

func quoteMeta(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`\.+*?()|[]{}^$`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func fileExists(p string) bool {
	if p == "" {
		return false
	}
	_, err := os.Stat(filepath.Clean(p))
	return err == nil
}

// UserPaths is banger's per-user layout under home, as a daemon run with
// BANGER_HOME=home sees it. Nothing is created (p.Ensure does that).
func UserPaths(t testing.TB, home string) paths.User {
	t.Helper()
	p, err := paths.ResolveUser(func(k string) string {
		if k == paths.EnvHome {
			return home
		}
		return ""
	})
	if err != nil {
		t.Fatalf("resolve banger's paths under %s: %v", home, err)
	}
	return p
}
