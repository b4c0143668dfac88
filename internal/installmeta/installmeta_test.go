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

func TestUpdateBuildInfoKeepsOwnerAndInstalledAt(t *testing.T) {
	p := filepath.Join(t.TempDir(), "install.toml")
	if err := Write(p, sample()); err != nil {
		t.Fatal(err)
	}
	if err := UpdateBuildInfo(p, "v0.2.0", "def456", "2026-05-01T00:00:00Z"); err != nil {
		t.Fatal(err)
	}
	got, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	want := sample()
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
