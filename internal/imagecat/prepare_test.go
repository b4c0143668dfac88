package imagecat

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRewriteSSHDConfig(t *testing.T) {
	in := `Include /etc/ssh/sshd_config.d/*.conf
#PermitRootLogin prohibit-password
PermitRootLogin yes
PasswordAuthentication=yes
KbdInteractiveAuthentication no
UsePAM yes
Match User alice
	PasswordAuthentication yes
`
	out := rewriteSSHDConfig(in)
	if !strings.HasPrefix(out, sshdHeader) {
		t.Fatalf("header not first:\n%s", out)
	}
	active := activeDirectives(out)
	if active[0] != "PermitRootLogin prohibit-password" || active[1] != "PasswordAuthentication no" {
		t.Fatalf("first directives = %q", active[:2])
	}
	for _, l := range active[3:] {
		k := strings.ToLower(strings.Fields(strings.ReplaceAll(l, "=", " "))[0])
		if k == "permitrootlogin" || (k == "passwordauthentication" && !strings.HasPrefix(l, "PasswordAuthentication yes")) {
			t.Fatalf("conflicting directive left active: %q\n%s", l, out)
		}
	}
	if !strings.Contains(out, "\tPasswordAuthentication yes\n") || !strings.Contains(out, "UsePAM yes\n") {
		t.Fatalf("unrelated or Match-block lines were changed:\n%s", out)
	}
}

func activeDirectives(cfg string) []string {
	var out []string
	for _, l := range strings.Split(cfg, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

func TestPrepareRootfsScrubsAndStaysInside(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "rootfs")
	outside := filepath.Join(dir, "outside")
	writeFile(t, outside, "sentinel")
	writeFile(t, filepath.Join(root, "etc/machine-id"), "0123456789abcdef0123456789abcdef\n")
	writeFile(t, filepath.Join(root, "var/lib/dbus/machine-id"), "0123456789abcdef0123456789abcdef\n")
	writeFile(t, filepath.Join(root, "etc/ssh/ssh_host_ed25519_key"), "secret")
	writeFile(t, filepath.Join(root, "etc/ssh/ssh_host_ed25519_key.pub"), "pub")
	writeFile(t, filepath.Join(root, "etc/ssh/moduli"), "keep")
	writeFile(t, filepath.Join(root, "etc/ssh/sshd_config"), "PermitRootLogin yes\n")
	writeFile(t, filepath.Join(root, "var/cache/apt/archives/x.deb"), "deb")
	writeFile(t, filepath.Join(root, "var/cache/apt/pkgcache.bin"), "bin")
	writeFile(t, filepath.Join(root, "var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease"), "rel")
	if err := os.MkdirAll(filepath.Join(root, "var/lib/apt/lists/partial"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "etc/hostname"), "buildhost\n")
	// Links planted in the tree must be replaced, never written through.
	for _, l := range []string{"etc/fstab", "etc/resolv.conf"} {
		if err := os.Symlink(outside, filepath.Join(root, l)); err != nil {
			t.Fatal(err)
		}
	}

	if err := PrepareRootfs(root); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(outside); string(b) != "sentinel" {
		t.Fatalf("file outside the rootfs changed: %q", b)
	}
	mustContent := func(rel, want string) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(root, rel))
		if err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("%s: want a regular file: %v %v", rel, fi, err)
		}
		b, _ := os.ReadFile(filepath.Join(root, rel))
		if string(b) != want {
			t.Fatalf("%s = %q, want %q", rel, b, want)
		}
	}
	mustContent("etc/machine-id", "")
	mustContent("etc/fstab", fstabContent)
	mustContent("etc/hostname", "localhost\n")
	mustContent("etc/ssh/moduli", "keep")
	for _, gone := range []string{"etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub",
		"var/cache/apt/archives/x.deb", "var/cache/apt/pkgcache.bin",
		"var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease", "var/lib/dbus/machine-id"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); !os.IsNotExist(err) {
			t.Errorf("%s still present (%v)", gone, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "var/lib/apt/lists/partial")); err != nil {
		t.Errorf("apt lists/partial dir removed: %v", err)
	}
	cfg, _ := os.ReadFile(filepath.Join(root, "etc/ssh/sshd_config"))
	if a := activeDirectives(string(cfg)); a[0] != "PermitRootLogin prohibit-password" || strings.Contains(string(cfg), "\nPermitRootLogin yes") {
		t.Fatalf("sshd_config:\n%s", cfg)
	}
}
