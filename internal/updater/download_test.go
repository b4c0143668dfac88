package updater

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/bangerdev/banger/internal/download"
)

func stagingEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func fetchRelease(t *testing.T, rs *releaseServer, version string) Release {
	t.Helper()
	m, err := FetchManifestFrom(context.Background(), nil, rs.manifestURL())
	if err != nil {
		t.Fatal(err)
	}
	rel, err := m.Find(version)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

func TestDownloadReleaseHappyPath(t *testing.T) {
	rs := newReleaseServer(t)
	tarball := makeTarball(t, releaseBins("cli", "daemon", "agent", "helper"))
	rs.addRelease("v0.2.0", tarball, true)
	rel := fetchRelease(t, rs, "v0.2.0")
	staging := filepath.Join(t.TempDir(), "staging")

	dl, err := DownloadRelease(context.Background(), nil, rel, rs.pub, staging, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dl.Tarball)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(tarball) {
		t.Fatal("staged tarball differs from the served one")
	}
	if string(dl.Sums) != string(rs.get("/v0.2.0/SHA256SUMS")) {
		t.Fatal("returned SHA256SUMS differs from the served one")
	}
	st, _ := os.Stat(staging)
	if st.Mode().Perm() != 0o700 {
		t.Fatalf("staging mode %v, want 0700", st.Mode().Perm())
	}
	sr, err := StageTarball(dl.Tarball, staging)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(sr.Bangerd); string(b) != "daemon" {
		t.Fatalf("staged bangerd = %q", b)
	}
}

// TestDownloadReleaseTamperingStagesNothing flips one byte in each artefact
// in turn: every variant is rejected and the staging directory stays empty.
func TestDownloadReleaseTamperingStagesNothing(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		index      func(n int) int
		want       error
	}{
		{"tarball", "/v0.2.0/" + TarballName("v0.2.0"), func(n int) int { return n / 2 }, download.ErrHashMismatch},
		{"sha256sums", "/v0.2.0/SHA256SUMS", func(n int) int { return 5 }, ErrBadSignature},
		{"signature", "/v0.2.0/SHA256SUMS.sig", func(n int) int { return n - 10 }, ErrBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := newReleaseServer(t)
			rs.addRelease("v0.2.0", makeTarball(t, releaseBins("cli", "daemon", "agent", "helper")), true)
			body := rs.get(tc.path)
			rs.set(tc.path, flipByte(body, tc.index(len(body))))
			rel := fetchRelease(t, rs, "v0.2.0")
			staging := filepath.Join(t.TempDir(), "staging")

			_, err := DownloadRelease(context.Background(), nil, rel, rs.pub, staging, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if names := stagingEntries(t, staging); len(names) != 0 {
				t.Fatalf("staging holds %v after a rejected download", names)
			}
		})
	}
}

func TestDownloadReleaseTarballNotInSums(t *testing.T) {
	rs := newReleaseServer(t)
	rs.addRelease("v0.2.0", makeTarball(t, releaseBins("a", "b", "c", "d")), true)
	// A correctly signed SHA256SUMS that lists another file only.
	sums := []byte("0000000000000000000000000000000000000000000000000000000000000000  banger_v0.1.0_linux_amd64.tar.gz\n")
	rs.set("/v0.2.0/SHA256SUMS", sums)
	rs.set("/v0.2.0/SHA256SUMS.sig", signBlob(t, rs.key, sums))
	staging := filepath.Join(t.TempDir(), "staging")
	_, err := DownloadRelease(context.Background(), nil, fetchRelease(t, rs, "v0.2.0"), rs.pub, staging, nil)
	if !errors.Is(err, ErrNotInSums) {
		t.Fatalf("err = %v, want ErrNotInSums", err)
	}
	if names := stagingEntries(t, staging); len(names) != 0 {
		t.Fatalf("staging holds %v", names)
	}
}

func TestDownloadReleaseClearsOldStaging(t *testing.T) {
	rs := newReleaseServer(t)
	rs.addRelease("v0.2.0", makeTarball(t, releaseBins("a", "b", "c", "d")), true)
	staging := filepath.Join(t.TempDir(), "staging")
	os.MkdirAll(filepath.Join(staging, "release"), 0o700)
	os.WriteFile(filepath.Join(staging, "leftover"), []byte("x"), 0o644)
	if _, err := DownloadRelease(context.Background(), nil, fetchRelease(t, rs, "v0.2.0"), rs.pub, staging, nil); err != nil {
		t.Fatal(err)
	}
	names := stagingEntries(t, staging)
	if len(names) != 1 || names[0] != TarballName("v0.2.0") {
		t.Fatalf("staging holds %v, want only the tarball", names)
	}
}

func TestParseSHA256SUMS(t *testing.T) {
	h := "ab" + string(make([]byte, 0))
	for len(h) < 64 {
		h += "0"
	}
	sums, err := ParseSHA256SUMS([]byte(h + "  a.tar.gz\n" + h + " *b.bin\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if sums["a.tar.gz"] != h || sums["b.bin"] != h || len(sums) != 2 {
		t.Fatalf("parsed %v", sums)
	}
	for _, bad := range []string{
		"xyz  a\n",
		h + "  a\n" + h + "  a\n",
		h + "  ../a\n",
		h + "\n",
		h[:63] + "  a\n",
	} {
		if _, err := ParseSHA256SUMS([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestManifestValidation(t *testing.T) {
	good := `{"schema":1,"latest":"v0.2.0","releases":[{"version":"v0.2.0","tarball":"x/banger_v0.2.0_linux_amd64.tar.gz","sha256sums":"x/SHA256SUMS","signature":"x/SHA256SUMS.sig"}]}`
	if _, err := ParseManifest([]byte(good)); err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{
		"schema 2":       `{"schema":2,"latest":"v0.2.0","releases":[]}`,
		"latest missing": `{"schema":1,"latest":"v0.3.0","releases":[{"version":"v0.2.0","tarball":"a","sha256sums":"b","signature":"c"}]}`,
		"duplicate":      `{"schema":1,"latest":"v0.2.0","releases":[{"version":"v0.2.0","tarball":"a","sha256sums":"b","signature":"c"},{"version":"v0.2.0","tarball":"a","sha256sums":"b","signature":"c"}]}`,
		"bad version":    `{"schema":1,"latest":"../x","releases":[{"version":"../x","tarball":"a","sha256sums":"b","signature":"c"}]}`,
		"missing url":    `{"schema":1,"latest":"v0.2.0","releases":[{"version":"v0.2.0","tarball":"a","sha256sums":"b"}]}`,
		"trailing data":  good + `{}`,
		"not json":       `schema = 1`,
	}
	for name, doc := range bad {
		if _, err := ParseManifest([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ParseManifest([]byte(`{"schema":2}`)); !errors.Is(err, ErrUnsupportedSchema) {
		t.Errorf("schema 2: %v, want ErrUnsupportedSchema", err)
	}

	// A manifest pointing a version at another version's tarball is refused
	// when the release is looked up.
	rs := newReleaseServer(t)
	rs.set("/manifest.json", []byte(`{"schema":1,"latest":"v0.3.0","releases":[{"version":"v0.3.0","tarball":"v0.2.0/banger_v0.2.0_linux_amd64.tar.gz","sha256sums":"v0.2.0/SHA256SUMS","signature":"v0.2.0/SHA256SUMS.sig"}]}`))
	m, err := FetchManifestFrom(context.Background(), nil, rs.manifestURL())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Find("v0.3.0"); !errors.Is(err, ErrInvalidManifest) {
		t.Fatalf("renamed tarball: %v, want ErrInvalidManifest", err)
	}
	if _, err := m.Find("v9.9.9"); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("unknown version: %v, want ErrUnknownVersion", err)
	}
	// Non-http schemes are refused.
	rs.set("/manifest.json", []byte(`{"schema":1,"latest":"v0.3.0","releases":[{"version":"v0.3.0","tarball":"file:///etc/banger_v0.3.0_linux_amd64.tar.gz","sha256sums":"a","signature":"b"}]}`))
	m, err = FetchManifestFrom(context.Background(), nil, rs.manifestURL())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Find("v0.3.0"); !errors.Is(err, ErrInvalidManifest) {
		t.Fatalf("file:// tarball: %v, want ErrInvalidManifest", err)
	}
	if _, err := FetchManifestFrom(context.Background(), nil, "file:///etc/passwd"); err == nil {
		t.Fatal("file:// manifest URL accepted")
	}
}
