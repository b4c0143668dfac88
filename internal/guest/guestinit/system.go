package guestinit

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/bangerdev/banger/internal/guest/guestconfig"
)

// The files below are rendered into root ("/" in the guest, a temp dir in
// tests).

// writeIdentity writes /etc/hostname, /etc/hosts and, when DNS servers are
// configured, /etc/resolv.conf.
func writeIdentity(root string, cfg *guestconfig.Config) error {
	if err := writeFileAtomic(filepath.Join(root, "etc/hostname"), []byte(cfg.Hostname+"\n"), 0o644); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(root, "etc/hosts"), []byte(hostsFile(cfg)), 0o644); err != nil {
		return err
	}
	if cfg.Network != nil && len(cfg.Network.DNS) > 0 {
		var b strings.Builder
		for _, d := range cfg.Network.DNS {
			fmt.Fprintf(&b, "nameserver %s\n", d)
		}
		// Rename replaces a symlink (e.g. to systemd-resolved) by a file.
		if err := writeFileAtomic(filepath.Join(root, "etc/resolv.conf"), []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func hostsFile(cfg *guestconfig.Config) string {
	self := "127.0.1.1"
	if cfg.Network != nil {
		self = cfg.Network.Address.Addr().String()
	}
	names := cfg.Hostname
	if short, _, ok := strings.Cut(cfg.Hostname, "."); ok {
		names += " " + short
	}
	return fmt.Sprintf("127.0.0.1\tlocalhost\n%s\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n", self, names)
}

// writeAuthorizedKeys makes root's authorized_keys exactly the configured
// keys (the config is authoritative); no keys leaves the image's file alone.
func writeAuthorizedKeys(root string, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	dir := filepath.Join(root, "root/.ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return writeFileAtomic(filepath.Join(dir, "authorized_keys"), []byte(strings.Join(keys, "\n")+"\n"), 0o600)
}

// writeFileAtomic replaces path (even a symlink) by a file with data.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := path + ".banger-tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp, perm); err != nil { // umask
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
