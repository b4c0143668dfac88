package vmdns

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"

	"github.com/bangerdev/banger/internal/system"
)

// DropInPath is where systemd-resolved reads banger's routing-domain config,
// relative to the filesystem root.
const DropInPath = "etc/systemd/resolved.conf.d/banger.conf"

// ErrInvalidDomain: the VM domain is not a single lower-case DNS label.
var ErrInvalidDomain = errors.New("invalid vm domain")

var domainLabel = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// ValidateDomain accepts a single lower-case DNS label ("banger"): the
// domain ends up in resolved's config and must not carry anything else.
func ValidateDomain(domain string) error {
	if !domainLabel.MatchString(domain) {
		return fmt.Errorf("%w: %q must match %s", ErrInvalidDomain, domain, domainLabel)
	}
	return nil
}

// ResolvedDropIn renders the systemd-resolved drop-in that routes the VM
// domain (and only it: "~" makes it a routing-only domain, not a search
// domain) to the VM DNS server at addr. Port 53 is left implicit.
func ResolvedDropIn(domain string, addr netip.AddrPort) (string, error) {
	if err := ValidateDomain(domain); err != nil {
		return "", err
	}
	if !addr.IsValid() || !addr.Addr().IsValid() || addr.Port() == 0 {
		return "", fmt.Errorf("resolved drop-in: invalid dns server address %q", addr)
	}
	server := addr.String()
	if addr.Port() == 53 {
		server = addr.Addr().String()
	}
	return fmt.Sprintf("# Written by banger: resolve .%s names through banger's VM DNS server.\n[Resolve]\nDNS=%s\nDomains=~%s\n", domain, server, domain), nil
}

// ApplyDropIn writes the drop-in under root ("/" in production) atomically,
// reporting whether the content changed (then systemd-resolved needs a
// restart to pick it up).
func ApplyDropIn(root, domain string, addr netip.AddrPort) (changed bool, err error) {
	text, err := ResolvedDropIn(domain, addr)
	if err != nil {
		return false, err
	}
	path := filepath.Join(root, DropInPath)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, []byte(text)) {
		return false, nil
	}
	if err := system.WriteFileAtomic(path, []byte(text), 0o644); err != nil {
		return false, fmt.Errorf("install resolved drop-in: %w", err)
	}
	return true, nil
}

// RemoveDropIn deletes the drop-in under root, reporting whether it existed.
func RemoveDropIn(root string) (removed bool, err error) {
	err = os.Remove(filepath.Join(root, DropInPath))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("remove resolved drop-in: %w", err)
	}
	return true, nil
}
