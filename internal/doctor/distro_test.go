package doctor

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseOSReleaseQuoting(t *testing.T) {
	d := ParseOSRelease([]byte(`# comment
NAME="Rocky Linux"
ID="rocky"
ID_LIKE="rhel centos fedora"
PRETTY_NAME='Rocky Linux 9.3 (Blue Onyx)'
broken line
`))
	if d.ID != "rocky" || len(d.Like) != 3 || d.Like[0] != "rhel" || d.Pretty != "Rocky Linux 9.3 (Blue Onyx)" {
		t.Fatalf("parsed %+v", d)
	}
}

func TestInstallHintsPerDistro(t *testing.T) {
	cases := []struct {
		name, osRelease             string
		family                      string
		qemu, e2fsprogs, debootstrp string
	}{
		{"debian", "ID=debian\n", "debian",
			"sudo apt-get install qemu-system-x86", "sudo apt-get install e2fsprogs", "sudo apt-get install debootstrap"},
		{"ubuntu", "ID=ubuntu\nID_LIKE=debian\n", "debian",
			"sudo apt-get install qemu-system-x86", "sudo apt-get install e2fsprogs", "sudo apt-get install debootstrap"},
		{"fedora", "ID=fedora\n", "fedora",
			"sudo dnf install qemu-system-x86-core", "sudo dnf install e2fsprogs", "sudo dnf install debootstrap"},
		{"rocky", "ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n", "fedora",
			"sudo dnf install qemu-system-x86-core", "sudo dnf install e2fsprogs", "sudo dnf install debootstrap"},
		{"arch", "ID=arch\n", "arch",
			"sudo pacman -S qemu-base", "sudo pacman -S e2fsprogs", "sudo pacman -S debootstrap"},
		{"manjaro", "ID=manjaro\nID_LIKE=arch\n", "arch",
			"sudo pacman -S qemu-base", "sudo pacman -S e2fsprogs", "sudo pacman -S debootstrap"},
		{"unknown", "ID=plan9\n", "",
			"install QEMU for x86_64 (the package providing qemu-system-x86_64) with your distribution's package manager",
			"install e2fsprogs (mkfs.ext4, debugfs, resize2fs, e2fsck) with your distribution's package manager",
			"install debootstrap with your distribution's package manager"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "os-release")
			if err := os.WriteFile(p, []byte(tc.osRelease), 0o644); err != nil {
				t.Fatal(err)
			}
			d := ReadDistro(p)
			if got := d.Family(); got != tc.family {
				t.Errorf("family = %q, want %q", got, tc.family)
			}
			for pkg, want := range map[Package]string{PkgQEMU: tc.qemu, PkgE2fsprogs: tc.e2fsprogs, PkgDebootstrap: tc.debootstrp} {
				if got := d.Install(pkg); got != want {
					t.Errorf("Install(%s) = %q, want %q", pkg, got, want)
				}
			}
		})
	}
}

func TestMissingOSReleaseGivesGenericHints(t *testing.T) {
	d := ReadDistro(filepath.Join(t.TempDir(), "absent"))
	if d.Family() != "" {
		t.Fatalf("family of a host without os-release = %q", d.Family())
	}
	if got := d.Install(PkgNFTables); got != "install nftables (nft) with your distribution's package manager" {
		t.Fatalf("hint = %q", got)
	}
}
