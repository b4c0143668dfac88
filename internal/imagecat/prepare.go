package imagecat

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
)

// sshdHeader goes first in sshd_config: sshd keeps the first value it
// reads for an option, so these win over the Include'd drop-ins and the
// distribution's defaults further down.
const sshdHeader = `# banger: root logs in with SSH keys only (first value wins in sshd).
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
`

const fstabContent = "# banger's init mounts the root filesystem; nothing else is mounted from here.\n"

// sshdOverridden are the options sshdHeader sets; earlier copies of them
// are commented out so the file reads unambiguously.
var sshdOverridden = map[string]bool{
	"permitrootlogin":                 true,
	"passwordauthentication":          true,
	"kbdinteractiveauthentication":    true,
	"challengeresponseauthentication": true,
}

// PrepareRootfs makes a freshly bootstrapped tree fit to be a banger image:
// an empty machine-id and no SSH host keys (each VM makes its own), no apt
// caches or lists, a harmless fstab, no host hostname or resolv.conf
// (banger's init writes both per VM), and key-only root login for sshd.
// All access goes through os.Root, so links in the tree cannot redirect a
// write to the host.
func PrepareRootfs(dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("prepare rootfs: %w", err)
	}
	defer root.Close()
	steps := []struct {
		what string
		fn   func(*os.Root) error
	}{
		{"empty machine-id", emptyMachineID},
		{"remove ssh host keys", removeHostKeys},
		{"clean apt caches", cleanApt},
		{"write fstab", func(r *os.Root) error { return replaceFile(r, "etc/fstab", []byte(fstabContent), 0o644) }},
		{"reset hostname", func(r *os.Root) error { return replaceFile(r, "etc/hostname", []byte("localhost\n"), 0o644) }},
		{"reset resolv.conf", func(r *os.Root) error {
			return replaceFile(r, "etc/resolv.conf", []byte("# written by banger's init for each VM\n"), 0o644)
		}},
		{"configure sshd", configureSSHD},
	}
	for _, s := range steps {
		if err := s.fn(root); err != nil {
			return fmt.Errorf("prepare rootfs: %s: %w", s.what, err)
		}
	}
	return nil
}

// replaceFile removes name (a symlink is removed, never followed) and
// writes a fresh regular file.
func replaceFile(r *os.Root, name string, data []byte, perm fs.FileMode) error {
	if err := r.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := r.MkdirAll(path.Dir(name), 0o755); err != nil {
		return err
	}
	f, err := r.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return r.Chmod(name, perm) // umask-proof
}

func emptyMachineID(r *os.Root) error {
	// systemd treats an empty (not missing) machine-id as "generate at boot".
	if err := replaceFile(r, "etc/machine-id", nil, 0o444); err != nil {
		return err
	}
	// dbus keeps its own copy on some releases; a symlink to /etc is fine.
	if fi, err := r.Lstat("var/lib/dbus/machine-id"); err == nil && fi.Mode().IsRegular() {
		return r.Remove("var/lib/dbus/machine-id")
	}
	return nil
}

func removeHostKeys(r *os.Root) error {
	return removeMatching(r, "etc/ssh", func(name string, _ bool) bool {
		return strings.HasPrefix(name, "ssh_host_")
	})
}

func cleanApt(r *os.Root) error {
	for _, c := range []struct {
		dir   string
		match func(string, bool) bool
	}{
		{"var/cache/apt/archives", func(n string, isDir bool) bool { return !isDir && n != "lock" }},
		{"var/cache/apt/archives/partial", func(n string, isDir bool) bool { return !isDir }},
		{"var/cache/apt", func(n string, isDir bool) bool { return !isDir && strings.HasSuffix(n, ".bin") }},
		{"var/lib/apt/lists", func(n string, isDir bool) bool { return !isDir && n != "lock" }},
		{"var/lib/apt/lists/partial", func(n string, isDir bool) bool { return !isDir }},
	} {
		if err := removeMatching(r, c.dir, c.match); err != nil {
			return err
		}
	}
	return nil
}

// removeMatching removes the entries of dir (not recursing) that match;
// a missing dir is fine.
func removeMatching(r *os.Root, dir string, match func(name string, isDir bool) bool) error {
	f, err := r.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	ents, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, e := range ents {
		if match(e.Name(), e.IsDir()) {
			if err := r.Remove(path.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func configureSSHD(r *os.Root) error {
	const name = "etc/ssh/sshd_config"
	data, err := r.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // no sshd in this image; the agent still works
	}
	if err != nil {
		return err
	}
	return replaceFile(r, name, []byte(rewriteSSHDConfig(string(data))), 0o644)
}

// rewriteSSHDConfig puts sshdHeader first and comments out the global
// settings it replaces (Match blocks are left alone).
func rewriteSSHDConfig(in string) string {
	var b strings.Builder
	b.WriteString(sshdHeader)
	b.WriteString("\n")
	inMatch := false
	sc := bufio.NewScanner(strings.NewReader(in))
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) > 0 {
			key := strings.ToLower(fields[0])
			if key == "match" {
				inMatch = true
			}
			if k, _, ok := strings.Cut(key, "="); ok {
				key = k
			}
			if !inMatch && sshdOverridden[key] {
				line = "# (set by banger above) " + line
			}
		}
		b.WriteString(line)
		b.WriteString("\n")
	}
	return b.String()
}
