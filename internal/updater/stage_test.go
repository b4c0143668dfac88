package updater

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func writeTarball(t *testing.T, entries []tarEntry) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "release.tar.gz")
	if err := os.WriteFile(p, makeTarball(t, entries), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStageTarballHappyPath(t *testing.T) {
	dest := t.TempDir()
	sr, err := StageTarball(writeTarball(t, releaseBins("cli-bytes", "daemon-bytes", "agent-bytes", "helper-bytes")), dest)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{sr.Banger: "cli-bytes", sr.Bangerd: "daemon-bytes", sr.Agent: "agent-bytes", sr.Helper: "helper-bytes"}
	for p, content := range want {
		if filepath.Dir(p) != sr.Dir {
			t.Errorf("%s is outside %s", p, sr.Dir)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != content {
			t.Errorf("%s = %q, want %q", p, b, content)
		}
		st, _ := os.Stat(p)
		if st.Mode().Perm() != 0o755 {
			t.Errorf("%s mode %v, want 0755 (headers said 0600/0640/0644/0700)", p, st.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(sr.Dir)
	if len(entries) != 4 {
		t.Fatalf("staged %d files, want 4", len(entries))
	}
}

func TestStageTarballRejects(t *testing.T) {
	bins := releaseBins("a", "b", "c", "d")
	cases := map[string][]tarEntry{
		"extra entry":      append(bins[:4:4], tarEntry{Name: "README", Body: "hi"}),
		"missing entry":    bins[:2],
		"missing helper":   append(bins[:1:1], bins[2:]...),
		"duplicate entry":  append(bins[:4:4], tarEntry{Name: BangerName, Body: "again"}),
		"duplicate helper": append(bins[:4:4], tarEntry{Name: HelperName, Body: "again"}),
		"path traversal":   {bins[0], bins[1], {Name: "../banger", Body: "x"}},
		"nested path":      {bins[0], bins[1], {Name: "bin/banger", Body: "x"}},
		"dot slash prefix": {bins[0], bins[1], {Name: "./banger", Body: "x"}},
		"absolute path":    {bins[0], bins[1], {Name: "/usr/local/bin/banger", Body: "x"}},
		"symlink":          {bins[0], bins[1], {Name: BangerName, Type: tar.TypeSymlink, Linkname: "/etc/shadow"}},
		"hard link":        {bins[0], bins[1], {Name: BangerName, Type: tar.TypeLink, Linkname: AgentName}},
		"directory":        {{Name: BangerName, Type: tar.TypeDir, Mode: 0o755}, bins[0], bins[1]},
		"fifo":             {bins[0], bins[1], {Name: BangerName, Type: tar.TypeFifo}},
		"empty":            {},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			dest := t.TempDir()
			_, err := StageTarball(writeTarball(t, entries), dest)
			if !errors.Is(err, ErrBadTarball) {
				t.Fatalf("err = %v, want ErrBadTarball", err)
			}
			if names := stagingEntries(t, filepath.Join(dest, "release")); len(names) != 0 {
				t.Fatalf("left %v behind", names)
			}
			if _, err := os.Lstat(filepath.Join(filepath.Dir(dest), "banger")); err == nil {
				t.Fatal("a file escaped the staging directory")
			}
		})
	}
}

func TestStageTarballRejectsNonGzip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.tar.gz")
	os.WriteFile(p, []byte("plain text, not gzip"), 0o644)
	if _, err := StageTarball(p, t.TempDir()); !errors.Is(err, ErrBadTarball) {
		t.Fatalf("err = %v, want ErrBadTarball", err)
	}
}
