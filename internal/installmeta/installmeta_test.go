package installmeta

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sample() Meta {
	return Meta{
		OwnerUser: "alice", OwnerUID: 1000, OwnerGID: 1001, OwnerHome: "/home/alice",
		Version: "v0.1.0", Commit: "abc123", BuiltAt: "2026-04-01T10:00:00Z",
		InstalledAt: time.Date(2026, 4, 2, 9, 30, 0, 0, time.UTC),
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "etc", "banger", "install.toml")
	if err := Write(p, sample()); err != nil {
		t.Fatal(err)
	}
	got, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if got != sample() {
		t.Fatalf("round trip: got %+v, want %+v", got, sample())
	}
	raw, _ := os.ReadFile(p)
	for _, key := range []string{"owner_user = 'alice'", "owner_uid = 1000", "installed_at = 2026-04-02T09:30:00Z"} {
		if !strings.Contains(string(raw), key) {
			t.Errorf("install.toml lacks %q:\n%s", key, raw)
		}
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o644 {
		t.Fatalf("mode = %v, want 0644", st.Mode().Perm())
	}
}

func withNetwork() Meta {
	m := sample()
	m.NetworkSubnet, m.NetworkBridge = "10.50.0.0/24", "bangertest"
	return m
}

func TestNetworkSettingsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	// Without the settings: no keys written, empty on read.
	p := filepath.Join(dir, "plain.toml")
	if err := Write(p, sample()); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(p)
	if strings.Contains(string(raw), "network_") {
		t.Fatalf("install.toml without network settings has network keys:\n%s", raw)
	}
	got, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.NetworkSubnet != "" || got.NetworkBridge != "" || got.HelperNetworkArgs() != nil {
		t.Fatalf("read back network %q/%q args %q, want none", got.NetworkSubnet, got.NetworkBridge, got.HelperNetworkArgs())
	}

	// With them.
	p = filepath.Join(dir, "net.toml")
	if err := Write(p, withNetwork()); err != nil {
		t.Fatal(err)
	}
	raw, _ = os.ReadFile(p)
	for _, key := range []string{"network_subnet = '10.50.0.0/24'", "network_bridge = 'bangertest'"} {
		if !strings.Contains(string(raw), key) {
			t.Errorf("install.toml lacks %q:\n%s", key, raw)
		}
	}
	if got, err = Read(p); err != nil {
		t.Fatal(err)
	}
	if got != withNetwork() {
		t.Fatalf("round trip: got %+v, want %+v", got, withNetwork())
	}
	if args := strings.Join(got.HelperNetworkArgs(), " "); args != "--subnet 10.50.0.0/24 --bridge bangertest" {
		t.Fatalf("helper args %q", args)
	}
	bridgeOnly := Meta{NetworkBridge: "bangerx"}
	if args := strings.Join(bridgeOnly.HelperNetworkArgs(), " "); args != "--bridge bangerx" {
		t.Fatalf("bridge-only helper args %q", args)
	}

	// A file written before the fields existed still reads.
	old := filepath.Join(dir, "old.toml")
	os.WriteFile(old, []byte("owner_user = 'alice'\nowner_uid = 1000\nowner_gid = 1001\nowner_home = '/home/alice'\nversion = 'v0.1.0'\n"), 0o644)
	if got, err = Read(old); err != nil {
		t.Fatalf("pre-network install.toml: %v", err)
	}
	if got.OwnerUser != "alice" || got.NetworkSubnet != "" || got.NetworkBridge != "" {
		t.Fatalf("pre-network install.toml read as %+v", got)
	}
}

func TestUpdateBuildInfoKeepsOwnerNetworkAndInstalledAt(t *testing.T) {
	p := filepath.Join(t.TempDir(), "install.toml")
	if err := Write(p, withNetwork()); err != nil {
		t.Fatal(err)
	}
	if err := UpdateBuildInfo(p, "v0.2.0", "def456", "2026-05-01T00:00:00Z"); err != nil {
		t.Fatal(err)
	}
	got, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	want := withNetwork()
	want.Version, want.Commit, want.BuiltAt = "v0.2.0", "def456", "2026-05-01T00:00:00Z"
	if got != want {
		t.Fatalf("after refresh: got %+v, want %+v", got, want)
	}
}

func TestReadMissingAndInvalid(t *testing.T) {
	dir := t.TempDir()
	if _, err := Read(filepath.Join(dir, "nope.toml")); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("missing file: %v, want ErrNotInstalled", err)
	}
	if err := UpdateBuildInfo(filepath.Join(dir, "nope.toml"), "v1.0.0", "x", "y"); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("update of missing file: %v, want ErrNotInstalled", err)
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("owner_user = \n"), 0o644)
	if _, err := Read(bad); err == nil {
		t.Fatal("malformed toml accepted")
	}
	noOwner := filepath.Join(dir, "noowner.toml")
	os.WriteFile(noOwner, []byte("version = 'v1.0.0'\n"), 0o644)
	if _, err := Read(noOwner); err == nil {
		t.Fatal("file without owner accepted")
	}
	m := sample()
	m.OwnerUser = ""
	if err := Write(filepath.Join(dir, "w.toml"), m); err == nil {
		t.Fatal("writing metadata without owner succeeded")
	}
}
