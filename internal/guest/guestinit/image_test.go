package guestinit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSystemdQuote(t *testing.T) {
	for in, want := range map[string]string{
		"banger.agent": "banger.agent",
		"/usr/local/lib/banger/banger-vsock-agent": "/usr/local/lib/banger/banger-vsock-agent",
		"":                 `""`,
		"a b":              `"a b"`,
		`50% "$HOME" \x`:   `"50%% \"$$HOME\" \\x"`,
		"line\nbreak\ttab": `"line\nbreak\ttab"`,
	} {
		if got := systemdQuote(in); got != want {
			t.Errorf("systemdQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestInstallUnitWritesAndEnables(t *testing.T) {
	root := t.TempDir()
	wants := filepath.Join(root, imageWantsDir)
	if err := os.MkdirAll(wants, 0o755); err != nil {
		t.Fatal(err)
	}
	// A stale link (last boot's, or a file an image put there) is replaced.
	if err := os.WriteFile(filepath.Join(wants, "banger-agent.service"), []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, content := range []string{"first\n", "second\n"} {
		if err := installUnit(root, imageAgentUnit, content); err != nil {
			t.Fatalf("install %d: %v", i, err)
		}
	}
	b, err := os.ReadFile(filepath.Join(root, imageAgentUnit))
	if err != nil || string(b) != "second\n" {
		t.Fatalf("unit = %q, %v; want the last content", b, err)
	}
	target, err := os.Readlink(filepath.Join(wants, "banger-agent.service"))
	if err != nil || target != imageAgentUnit {
		t.Fatalf("wants link -> %q, %v; want %s", target, err, imageAgentUnit)
	}
}

func TestHostKeyUnit(t *testing.T) {
	u := hostKeyUnit("/usr/bin/ssh-keygen")
	for _, want := range []string{"ExecStart=/usr/bin/ssh-keygen -A", "Type=oneshot", "Before=ssh.service sshd.service", "WantedBy=multi-user.target"} {
		if !strings.Contains(u, want) {
			t.Errorf("host key unit lacks %q:\n%s", want, u)
		}
	}
}

func TestFindImageInit(t *testing.T) {
	root := t.TempDir()
	if got := findImageInit(root); got != "" {
		t.Fatalf("empty root: init %q", got)
	}
	sd := filepath.Join(root, "lib/systemd/systemd")
	if err := os.MkdirAll(filepath.Dir(sd), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sd, []byte("#!/bin/false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := findImageInit(root); got != "" {
		t.Fatalf("a non-executable file counts as init: %q", got)
	}
	if err := os.Chmod(sd, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := findImageInit(root); got != "/lib/systemd/systemd" {
		t.Fatalf("init %q, want /lib/systemd/systemd", got)
	}
	// systemd-sysv's /sbin/init link wins; it is followed to check it.
	if err := os.MkdirAll(filepath.Join(root, "sbin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../lib/systemd/systemd", filepath.Join(root, "sbin/init")); err != nil {
		t.Fatal(err)
	}
	if got := findImageInit(root); got != "/sbin/init" {
		t.Fatalf("init %q, want /sbin/init", got)
	}
}
