package doctor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/bangerdev/banger/internal/jailer"
	"github.com/bangerdev/banger/internal/model"
)

// CheckJailer is what Firecracker's jailer needs of this host.
const CheckJailer = "jailer"

// checkJailer checks, where Firecracker could run, what the root helper
// needs to jail it ([firecracker] in config.toml): root-owned binaries at
// the configured paths, the KVM device, the host's cgroup version, a uid
// range no user or group has, and a chroot base only root can change.
// Unmet, Firecracker cannot start: a warning, as QEMU still runs VMs.
func (r *runner) checkJailer(ctx context.Context) Check {
	c := Check{Name: CheckJailer}
	j := r.cfg.Firecracker.WithDefaults()
	if !slices.Contains(r.vmms, model.VMMFirecracker) {
		c.Status, c.Detail = OK, "not needed: Firecracker cannot run here (see the firecracker check)"
		return c
	}
	warn := func(detail, fix string) Check {
		c.Status, c.Detail, c.Fix = Warn, detail+": Firecracker VMs cannot start, VMs run under QEMU", fix
		return c
	}
	if err := j.Validate(); err != nil {
		return warn(err.Error(), "fix [firecracker] in config.toml (and the root helper's --jailer-* flags)")
	}
	for _, b := range []struct{ key, path string }{{"binary", j.FirecrackerBinary}, {"jailer_binary", j.JailerBinary}} {
		if err := jailer.CheckRootBinary(b.path); err != nil {
			return warn(fmt.Sprintf("firecracker.%s: %v", b.key, err),
				fmt.Sprintf("install it as a root-owned file (sudo install -o root -g root -m 0755 FILE %s), or set firecracker.%s in config.toml and the helper's flags", b.path, b.key))
		}
	}
	if st, err := os.Stat(r.cfg.KVMDevice); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return warn(fmt.Sprintf("%s is missing or not a device", r.cfg.KVMDevice), "load the kvm module (modprobe kvm_intel or kvm_amd) on a host with hardware virtualization")
	}
	v, err := jailer.HostCgroupVersion(r.cfg.Mountinfo)
	if err != nil {
		return warn(fmt.Sprintf("cgroups: %v", err), "mount the cgroup filesystem at /sys/fs/cgroup")
	}
	if v != j.CgroupVersion {
		return warn(fmt.Sprintf("this host runs cgroup v%s but firecracker.cgroup_version is %q", v, j.CgroupVersion),
			fmt.Sprintf("set cgroup_version = %q under [firecracker] in config.toml", v))
	}
	if err := j.CheckRange(r.cfg.Passwd, r.cfg.Group); err != nil {
		return warn(err.Error(), "set firecracker.uid_start to a range no user, group or subuid range uses")
	}
	if err := jailer.CheckRootDir(filepath.Dir(j.ChrootBase)); err != nil {
		return warn(fmt.Sprintf("firecracker.chroot_base %s: %v", j.ChrootBase, err), "put the jails under a directory only root can change (default "+jailer.DefaultChrootBase+")")
	}
	c.Status = OK
	c.Detail = fmt.Sprintf("%s and %s root-owned; jails run as uids %d-%d, cgroup v%s, under %s", j.JailerBinary, j.FirecrackerBinary,
		j.UIDStart, j.UIDStart+j.UIDCount-1, j.CgroupVersion, j.ChrootBase)
	return c
}
