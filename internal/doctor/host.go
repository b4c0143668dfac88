package doctor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/vmm/firecracker"
)

// QEMUBinary is the emulator banger's QEMU driver runs.
const QEMUBinary = "qemu-system-x86_64"

// MinQEMU is the oldest QEMU whose microvm machine has ACPI (5.2), which
// enumerates virtio-mmio devices for kernels such as Debian's cloud kernel
// that lack CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES.
var MinQEMU = QEMUVersion{5, 2, 0}

// QEMUVersion is a QEMU release.
type QEMUVersion struct{ Major, Minor, Micro int }

func (v QEMUVersion) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro) }

// Less orders versions.
func (v QEMUVersion) Less(o QEMUVersion) bool {
	if v.Major != o.Major {
		return v.Major < o.Major
	}
	if v.Minor != o.Minor {
		return v.Minor < o.Minor
	}
	return v.Micro < o.Micro
}

var qemuVersionRe = regexp.MustCompile(`QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?`)

// ParseQEMUVersion reads `qemu-system-x86_64 --version` output.
func ParseQEMUVersion(out string) (QEMUVersion, error) {
	m := qemuVersionRe.FindStringSubmatch(out)
	if m == nil {
		line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
		return QEMUVersion{}, fmt.Errorf("no QEMU version in %q", line)
	}
	var v QEMUVersion
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	v.Micro, _ = strconv.Atoi(m[3]) // "" (absent micro) reads as 0
	return v, nil
}

func (r *runner) checkKVM(context.Context) Check {
	r.kvm = r.cfg.KVM()
	c := Check{Name: CheckKVM}
	if r.kvm.Usable {
		c.Status, c.Detail = OK, "KVM usable: "+r.kvm.Reason+"; VMs run hardware-accelerated"
		return c
	}
	c.Status = Warn
	reason := r.kvm.Reason
	if strings.HasPrefix(reason, "KVM is PVM") {
		// The probe's wording, said plainly for people who never heard of PVM.
		reason = "KVM is PVM (paravirtual nested): a standard kernel cannot run under it"
	}
	c.Detail = reason + "; VMs use TCG software emulation (slow but works)"
	c.Fix = "for hardware speed run banger on a host with VT-x/AMD-V (kvm_intel or kvm_amd loaded) and /dev/kvm readable and writable by you"
	return c
}

func (r *runner) checkQEMU(ctx context.Context) Check {
	c := Check{Name: CheckQEMU}
	path, onPath, found := r.find(QEMUBinary)
	if !found {
		c.Status, c.Detail = Fail, QEMUBinary+" is not installed: banger cannot run VMs without it"
		c.Fix = r.distro.Install(PkgQEMU)
		return c
	}
	out, err := r.cfg.Output(ctx, path, "--version")
	if err != nil {
		c.Status, c.Detail = Fail, fmt.Sprintf("%s --version failed: %v: %s", path, err, firstLine(out))
		c.Fix = "reinstall QEMU: " + r.distro.Install(PkgQEMU)
		return c
	}
	v, err := ParseQEMUVersion(string(out))
	if err != nil {
		c.Status, c.Detail = Warn, fmt.Sprintf("%s: %v", path, err)
		c.Fix = "check that " + path + " is QEMU: " + r.distro.Install(PkgQEMU)
		return c
	}
	if v.Less(MinQEMU) {
		c.Status = Fail
		c.Detail = fmt.Sprintf("%s is QEMU %s; banger needs %s or newer (microvm with ACPI)", path, v, MinQEMU)
		c.Fix = "upgrade QEMU: " + r.distro.Install(PkgQEMU)
		return c
	}
	machines, err := r.cfg.Output(ctx, path, "-machine", "help")
	if err != nil || !hasMachine(string(machines), "microvm") {
		c.Status = Fail
		c.Detail = fmt.Sprintf("%s (QEMU %s) has no microvm machine type", path, v)
		c.Fix = "install a full x86_64 QEMU build: " + r.distro.Install(PkgQEMU)
		return c
	}
	r.vmms = append(r.vmms, model.VMMQEMU)
	c.Status, c.Detail = OK, fmt.Sprintf("%s, QEMU %s, microvm machine available", path, v)
	if !onPath {
		c.Status = Warn
		c.Detail += notOnPath(path)
		c.Fix = pathFix(path)
	}
	return c
}

// hasMachine reports whether `-machine help` output lists name.
func hasMachine(out, name string) bool {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return true
		}
	}
	return false
}

func (r *runner) checkFirecracker(ctx context.Context) Check {
	c := Check{Name: CheckFirecracker}
	rangeText := fmt.Sprintf("%s up to (not including) %s", firecracker.MinVersion, firecracker.MaxVersion)
	get := fmt.Sprintf("optional, for KVM hosts: put firecracker and jailer %s from https://github.com/firecracker-microvm/firecracker/releases on PATH", rangeText)
	path, _, found := r.find("firecracker")
	if !found {
		c.Status, c.Detail, c.Fix = Warn, "not installed: VMs run under QEMU", get
		if !r.kvm.Usable {
			c.Detail += " (and Firecracker needs usable KVM, which this host lacks)"
			c.Fix = ""
		}
		return c
	}
	out, err := r.cfg.Output(ctx, path, "--version")
	if err != nil {
		c.Status, c.Detail, c.Fix = Fail, fmt.Sprintf("%s --version failed: %v: %s", path, err, firstLine(out)), "reinstall it: "+get
		return c
	}
	v, err := firecracker.ParseVersion(string(out))
	if err != nil {
		c.Status, c.Detail, c.Fix = Fail, fmt.Sprintf("%s: %v", path, err), "reinstall it: "+get
		return c
	}
	if v.Less(firecracker.MinVersion) || !v.Less(firecracker.MaxVersion) {
		c.Status = Fail
		c.Detail = fmt.Sprintf("%s is Firecracker %s; banger supports %s", path, v, rangeText)
		c.Fix = "replace it (or remove it to use QEMU): " + get
		return c
	}
	if _, _, ok := r.find("jailer"); !ok {
		c.Status = Warn
		c.Detail = fmt.Sprintf("%s is Firecracker %s but jailer is missing: VMs run under QEMU", path, v)
		c.Fix = "install jailer from the same release: " + get
		return c
	}
	c.Status, c.Detail = OK, fmt.Sprintf("%s, Firecracker %s (supported: %s)", path, v, rangeText)
	if !r.kvm.Usable {
		c.Status = Warn
		c.Detail += "; unusable here without KVM: VMs run under QEMU"
		c.Fix = "none needed (QEMU is used); Firecracker needs hardware KVM"
		return c
	}
	r.vmms = append(r.vmms, model.VMMFirecracker)
	return c
}

// e2fsprogsTools are the programs banger runs to build and grow ext4 disks.
var e2fsprogsTools = []string{"mkfs.ext4", "debugfs", "resize2fs", "e2fsck"}

func (r *runner) checkE2fsprogs(context.Context) Check {
	c := Check{Name: CheckE2fsprogs}
	var missing, offPath, found []string
	for _, t := range e2fsprogsTools {
		p, onPath, ok := r.find(t)
		switch {
		case !ok:
			missing = append(missing, t)
		case !onPath:
			offPath = append(offPath, p)
		default:
			found = append(found, p)
		}
	}
	switch {
	case len(missing) > 0:
		c.Status = Fail
		c.Detail = fmt.Sprintf("missing %s: banger needs them to make and grow VM disks", strings.Join(missing, ", "))
		c.Fix = r.distro.Install(PkgE2fsprogs)
	case len(offPath) > 0:
		c.Status = Warn
		c.Detail = fmt.Sprintf("%s installed but not on PATH: a daemon started from this shell will not find them", strings.Join(offPath, ", "))
		c.Fix = pathFix(offPath[0])
	default:
		c.Status, c.Detail = OK, strings.Join(found, ", ")
	}
	return c
}

func (r *runner) checkDebootstrap(context.Context) Check {
	c := Check{Name: CheckDebootstrap}
	p, onPath, ok := r.find("debootstrap")
	switch {
	case !ok:
		c.Status, c.Detail = Warn, "not installed: needed only to build Debian/Ubuntu images (`banger image build`)"
		c.Fix = r.distro.Install(PkgDebootstrap)
	case !onPath:
		c.Status, c.Detail = Warn, p+notOnPath(p)
		c.Fix = pathFix(p)
	default:
		c.Status, c.Detail = OK, p
	}
	return c
}

// checkNetTools is informational: banger drives netlink and nftables
// itself; ip and nft only help a person look at what it made.
func (r *runner) checkNetTools(context.Context) Check {
	var parts []string
	for _, t := range []struct {
		name string
		pkg  Package
	}{{"ip", PkgIPRoute}, {"nft", PkgNFTables}} {
		if p, _, ok := r.find(t.name); ok {
			parts = append(parts, t.name+": "+p)
		} else {
			parts = append(parts, fmt.Sprintf("%s: not installed (optional, to inspect banger's network by hand: %s)", t.name, r.distro.Install(t.pkg)))
		}
	}
	return Check{Name: CheckNetTools, Status: OK, Detail: strings.Join(parts, "; ")}
}

func (r *runner) checkDisk(context.Context) Check {
	c := Check{Name: CheckDisk}
	dir := existingAncestor(r.cfg.Paths.State)
	free, err := r.cfg.Statfs(dir)
	if err != nil {
		c.Status, c.Detail = Warn, fmt.Sprintf("cannot measure free space at %s: %v", dir, err)
		return c
	}
	c.Detail = fmt.Sprintf("%s free at %s", humanBytes(free), dir)
	switch {
	case free < DiskFailBytes:
		c.Status = Fail
		c.Detail += fmt.Sprintf(" (under %s: VM disks cannot be made)", humanBytes(DiskFailBytes))
		c.Fix = "free space there, or move banger's state with BANGER_HOME=/a/bigger/disk"
	case free < DiskWarnBytes:
		c.Status = Warn
		c.Detail += fmt.Sprintf(" (under %s: room for few VMs and images)", humanBytes(DiskWarnBytes))
		c.Fix = "free space there, or move banger's state with BANGER_HOME=/a/bigger/disk"
	default:
		c.Status = OK
	}
	return c
}

// existingAncestor is dir or its nearest existing parent: a fresh install
// has no state directory yet, but its filesystem is what matters.
func existingAncestor(dir string) string {
	d := filepath.Clean(dir)
	for {
		if _, err := os.Stat(d); err == nil || !errors.Is(err, os.ErrNotExist) {
			return d
		}
		parent := filepath.Dir(d)
		if parent == d {
			return d
		}
		d = parent
	}
}

func humanBytes(n uint64) string {
	const gib, mib = 1 << 30, 1 << 20
	switch {
	case n >= gib:
		return fmt.Sprintf("%.1f GiB", float64(n)/gib)
	default:
		return fmt.Sprintf("%.0f MiB", float64(n)/mib)
	}
}

func notOnPath(p string) string {
	return fmt.Sprintf(" (found at %s, but %s is not on PATH: a daemon started from this shell will not find it)", p, filepath.Dir(p))
}

func pathFix(p string) string {
	return fmt.Sprintf("add %s to PATH (export PATH=\"$PATH:%s\" in your shell profile)", filepath.Dir(p), filepath.Dir(p))
}

func firstLine(b []byte) string {
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return line
}
