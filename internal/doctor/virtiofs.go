package doctor

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// CheckVirtiofs is the shared-directory check (vm create --mount).
const CheckVirtiofs = "shared directories"

// checkVirtiofs: --mount needs virtiofsd, unprivileged user namespaces (the
// owner daemon runs virtiofsd in one, mapping guest root to the owner) and
// the virtiofs module in the guest kernel. A lack is a warning: VMs
// without --mount do not need any of it.
func (r *runner) checkVirtiofs(ctx context.Context) Check {
	c := Check{Name: CheckVirtiofs}
	bin := r.cfg.Virtiofsd
	if !isExecutable(bin) {
		c.Status, c.Detail = Warn, bin+" is not installed: vm create --mount cannot share directories"
		c.Fix = r.distro.Install(PkgQEMU) + " (it carries virtiofsd)"
		return c
	}
	if v, err := r.cfg.Sysctl("user/max_user_namespaces"); err == nil && strings.TrimSpace(v) == "0" {
		c.Status, c.Detail = Warn, "user namespaces are disabled (user.max_user_namespaces = 0): virtiofsd cannot map guest root to you"
		c.Fix = "sysctl -w user.max_user_namespaces=10000"
		return c
	}
	if v, err := r.cfg.Sysctl("kernel/unprivileged_userns_clone"); err == nil && strings.TrimSpace(v) == "0" {
		c.Status, c.Detail = Warn, "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0): virtiofsd cannot run as you"
		c.Fix = "sysctl -w kernel.unprivileged_userns_clone=1"
		return c
	}
	if v, err := r.cfg.Sysctl("kernel/apparmor_restrict_unprivileged_userns"); err == nil && strings.TrimSpace(v) == "1" {
		c.Status, c.Detail = Warn, "AppArmor restricts unprivileged user namespaces: virtiofsd cannot run as you"
		c.Fix = "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile allowing userns for bangerd"
		return c
	}
	c.Status, c.Detail = OK, bin+", unprivileged user namespaces available"
	if r.cfg.OwnerState {
		return c // root does not read the owner's kernel files
	}
	var without []string
	kernels, _ := readKernelDir(r.cfg.Paths.KernelsDir())
	for _, k := range kernels {
		if !hasModule(filepath.Join(r.cfg.Paths.KernelsDir(), k.Name, "modules"), "virtiofs") {
			without = append(without, k.Name)
		}
	}
	if len(without) > 0 {
		c.Status = Warn
		c.Detail += fmt.Sprintf("; kernel %s has no virtiofs module: its VMs cannot mount shares", strings.Join(without, ", "))
		c.Fix = "boot VMs with --mount on a kernel with virtiofs (banger kernel pull: Debian's cloud kernel has it)"
	}
	return c
}

// hasModule reports whether a kernel's modules directory has name, as a
// module (modules.dep) or built in (modules.builtin).
func hasModule(dir, name string) bool {
	for _, f := range []string{"modules.dep", "modules.builtin"} {
		fh, err := os.Open(filepath.Join(dir, f))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			mod, _, _ := strings.Cut(sc.Text(), ":")
			base := filepath.Base(mod)
			if base == name+".ko" || strings.HasPrefix(base, name+".ko.") {
				fh.Close()
				return true
			}
		}
		fh.Close()
	}
	return false
}

func sysctl(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", name))
	return string(b), err
}
