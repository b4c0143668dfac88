// Package sshkeys holds banger's SSH trust material: the banger-managed
// ed25519 client key injected into every guest, the known_hosts file made
// from host keys pinned on first use, the ssh_config include that lets the
// system ssh client reach NAME.banger with both, and the trust-on-first-use
// probe itself. Host-key checking is never disabled: a changed key fails
// closed until the user forgets it explicitly.
package sshkeys

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/system"
)

// Domain is the DNS suffix of VM names (vmdns answers NAME.banger).
const Domain = "banger"

// HostKeyAlgorithm is the one host key type banger pins and the system
// client is told to use, so both always agree on which key is checked.
const HostKeyAlgorithm = ssh.KeyAlgoED25519

// Files are where banger keeps its SSH material.
type Files struct {
	Key        string // private key (0600); Key+".pub" holds the public one
	KnownHosts string // pinned guest host keys, rewritten from the store
	Config     string // ssh_config include for the system client
}

// FilesFor lays the files out under the user's config directory.
func FilesFor(p paths.User) Files {
	return Files{
		Key:        filepath.Join(p.SSHDir(), "id_ed25519"),
		KnownHosts: filepath.Join(p.SSHDir(), "known_hosts"),
		Config:     filepath.Join(p.Config, "ssh_config"),
	}
}

// EnsureKey makes the banger key once (later calls read it back) and
// returns its authorized_keys line. Concurrent callers agree on one key:
// the private key is published with a hard link, which fails if another
// caller got there first, and the public line is always derived from it.
func EnsureKey(f Files) (string, error) {
	if line, err := readKey(f.Key); err == nil {
		return line, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(f.Key), 0o700); err != nil {
		return "", fmt.Errorf("create ssh key directory: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("generate banger ssh key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "banger")
	if err != nil {
		return "", fmt.Errorf("encode banger ssh key: %w", err)
	}
	tmp := f.Key + ".new-" + hex.EncodeToString(priv[:4])
	if err := writeAtomic(tmp, pem.EncodeToMemory(block), 0o600); err != nil {
		return "", err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, f.Key); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("publish banger ssh key %s: %w", f.Key, err)
	}
	line, err := readKey(f.Key)
	if err != nil {
		return "", err
	}
	if err := writeAtomic(f.Key+".pub", []byte(line+"\n"), 0o644); err != nil {
		return "", err
	}
	return line, nil
}

// readKey parses the private key at path and returns its public
// authorized_keys line.
func readKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read banger ssh key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return "", fmt.Errorf("parse banger ssh key %s: %w", path, err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + " banger", nil
}

// Host is one VM as the SSH files name it.
type Host struct {
	Name string
	IP   string
	// HostKeys are the pinned keys in authorized_keys form ("ssh-ed25519 AAAA…").
	HostKeys []string
}

// Alias is the name a VM's host key is filed under (HostKeyAlias), so
// `ssh NAME`, `ssh NAME.banger` and the IP all check the same pinned key.
func Alias(name string) string { return name + "." + Domain }

// WriteKnownHosts rewrites the known_hosts file from the pinned keys.
func WriteKnownHosts(f Files, hosts []Host) error {
	var b strings.Builder
	b.WriteString("# Written by banger from the host keys it pinned on first use. Do not edit:\n")
	b.WriteString("# banger rewrites this file; use `banger vm ssh --forget-host-key NAME`.\n")
	for _, h := range sorted(hosts) {
		names := Alias(h.Name) + "," + h.Name
		if h.IP != "" {
			names += "," + h.IP
		}
		for _, k := range h.HostKeys {
			fmt.Fprintf(&b, "%s %s\n", names, strings.TrimSpace(k))
		}
	}
	return writeAtomic(f.KnownHosts, []byte(b.String()), 0o600)
}

// WriteConfig rewrites the ssh_config include: a block per VM with an
// address, then a catch-all for *.banger names resolved by vmdns.
func WriteConfig(f Files, hosts []Host) error {
	var b strings.Builder
	b.WriteString("# Written by banger. Use it from ~/.ssh/config with:\n")
	fmt.Fprintf(&b, "#   Include %s\n", f.Config)
	b.WriteString("# then `ssh NAME.banger`. Host keys are pinned on first use by banger and\n")
	b.WriteString("# checked strictly; banger rewrites this file.\n\n")
	common := func(alias string) {
		b.WriteString("  User root\n")
		fmt.Fprintf(&b, "  IdentityFile %q\n", f.Key)
		b.WriteString("  IdentitiesOnly yes\n")
		fmt.Fprintf(&b, "  UserKnownHostsFile %q\n", f.KnownHosts)
		b.WriteString("  GlobalKnownHostsFile /dev/null\n")
		b.WriteString("  StrictHostKeyChecking yes\n")
		fmt.Fprintf(&b, "  HostKeyAlgorithms %s\n", HostKeyAlgorithm)
		if alias != "" {
			fmt.Fprintf(&b, "  HostKeyAlias %s\n", alias)
		}
	}
	for _, h := range sorted(hosts) {
		if h.IP == "" {
			continue
		}
		fmt.Fprintf(&b, "Host %s %s\n", h.Name, Alias(h.Name))
		fmt.Fprintf(&b, "  HostName %s\n", h.IP)
		common(Alias(h.Name))
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "Host *.%s\n", Domain)
	common("")
	return writeAtomic(f.Config, []byte(b.String()), 0o600)
}

func sorted(hosts []Host) []Host {
	out := append([]Host(nil), hosts...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// writeAtomic replaces path so readers (a running ssh) never see half a file.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create directory of %s: %w", path, err)
	}
	return system.WriteFileAtomic(path, data, mode)
}
