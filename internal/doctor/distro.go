package doctor

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Distro is what /etc/os-release says about the host, enough to name the
// package that provides a missing tool.
type Distro struct {
	ID     string   // "debian", "fedora", "arch", …; "" when unknown
	Like   []string // ID_LIKE, e.g. ["rhel", "fedora"]
	Pretty string   // PRETTY_NAME, for messages
}

// ReadDistro parses an os-release file. A missing or unreadable file gives
// the zero Distro, whose hints are generic: doctor must still work there.
func ReadDistro(path string) Distro {
	b, err := os.ReadFile(path)
	if err != nil {
		return Distro{}
	}
	return ParseOSRelease(b)
}

// ParseOSRelease reads the KEY=value lines of os-release(5).
func ParseOSRelease(b []byte) Distro {
	var d Distro
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = unquote(strings.TrimSpace(v))
		switch strings.TrimSpace(k) {
		case "ID":
			d.ID = strings.ToLower(v)
		case "ID_LIKE":
			d.Like = strings.Fields(strings.ToLower(v))
		case "PRETTY_NAME":
			d.Pretty = v
		}
	}
	return d
}

func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		if v[0] == '"' {
			if u, err := strconv.Unquote(v); err == nil {
				return u
			}
		}
		return v[1 : len(v)-1]
	}
	return v
}

// Package is a host package banger depends on, named per distro family.
type Package string

// The packages doctor can suggest.
const (
	PkgQEMU        Package = "qemu"
	PkgE2fsprogs   Package = "e2fsprogs"
	PkgDebootstrap Package = "debootstrap"
	PkgIPRoute     Package = "iproute"
	PkgNFTables    Package = "nftables"
)

type family struct {
	install string // command prefix
	names   map[Package]string
}

var families = map[string]family{
	"debian": {"sudo apt-get install", map[Package]string{
		PkgQEMU: "qemu-system-x86", PkgE2fsprogs: "e2fsprogs", PkgDebootstrap: "debootstrap",
		PkgIPRoute: "iproute2", PkgNFTables: "nftables"}},
	"fedora": {"sudo dnf install", map[Package]string{
		PkgQEMU: "qemu-system-x86-core", PkgE2fsprogs: "e2fsprogs", PkgDebootstrap: "debootstrap",
		PkgIPRoute: "iproute", PkgNFTables: "nftables"}},
	"arch": {"sudo pacman -S", map[Package]string{
		PkgQEMU: "qemu-base", PkgE2fsprogs: "e2fsprogs", PkgDebootstrap: "debootstrap",
		PkgIPRoute: "iproute2", PkgNFTables: "nftables"}},
	"suse": {"sudo zypper install", map[Package]string{
		PkgQEMU: "qemu-x86", PkgE2fsprogs: "e2fsprogs", PkgDebootstrap: "debootstrap",
		PkgIPRoute: "iproute2", PkgNFTables: "nftables"}},
	"alpine": {"sudo apk add", map[Package]string{
		PkgQEMU: "qemu-system-x86_64", PkgE2fsprogs: "e2fsprogs", PkgDebootstrap: "debootstrap",
		PkgIPRoute: "iproute2", PkgNFTables: "nftables"}},
}

// aliases maps IDs and ID_LIKE words to a family.
var aliases = map[string]string{
	"debian": "debian", "ubuntu": "debian",
	"fedora": "fedora", "rhel": "fedora", "centos": "fedora", "rocky": "fedora", "almalinux": "fedora",
	"arch": "arch", "archlinux": "arch", "manjaro": "arch",
	"suse": "suse", "opensuse": "suse", "opensuse-leap": "suse", "opensuse-tumbleweed": "suse", "sles": "suse",
	"alpine": "alpine",
}

// Family is "debian", "fedora", "arch", "suse", "alpine" or "" (unknown):
// ID first, then each ID_LIKE word.
func (d Distro) Family() string {
	for _, id := range append([]string{d.ID}, d.Like...) {
		if f, ok := aliases[id]; ok {
			return f
		}
	}
	return ""
}

// generic describes each package for hosts doctor does not know.
var generic = map[Package]string{
	PkgQEMU:        "QEMU for x86_64 (the package providing qemu-system-x86_64)",
	PkgE2fsprogs:   "e2fsprogs (mkfs.ext4, debugfs, resize2fs, e2fsck)",
	PkgDebootstrap: "debootstrap",
	PkgIPRoute:     "iproute2 (ip)",
	PkgNFTables:    "nftables (nft)",
}

// Install is the command that installs pkg here, or a sentence naming it
// when the distro is unknown.
func (d Distro) Install(pkg Package) string {
	if f, ok := families[d.Family()]; ok {
		return fmt.Sprintf("%s %s", f.install, f.names[pkg])
	}
	return fmt.Sprintf("install %s with your distribution's package manager", generic[pkg])
}
