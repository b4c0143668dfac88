package doctor

import (
	"os"
	"path/filepath"
	"testing"
)

// TestVirtiofsCheck: --mount's needs (virtiofsd, unprivileged user
// namespaces, the guest kernel's virtiofs module) each warn with a fix.
func TestVirtiofsCheck(t *testing.T) {
	h := newHost(t, debian)
	h.goodTools()
	expect(t, mustFind(t, h.run(), CheckVirtiofs), Warn, "virtiofsd is not installed", "apt-get install")

	h.tool(h.bin, "virtiofsd", "exit 0")
	expect(t, mustFind(t, h.run(), CheckVirtiofs), OK, "unprivileged user namespaces available", "")

	for name, val := range map[string]string{
		"user/max_user_namespaces":                     "0",
		"kernel/unprivileged_userns_clone":             "0",
		"kernel/apparmor_restrict_unprivileged_userns": "1",
	} {
		h.cfg.Sysctl = func(n string) (string, error) {
			if n == name {
				return val + "\n", nil
			}
			return "", os.ErrNotExist
		}
		expect(t, mustFind(t, h.run(), CheckVirtiofs), Warn, "namespaces", "sysctl")
	}
	h.cfg.Sysctl = func(string) (string, error) { return "", os.ErrNotExist }

	// A kernel without the module warns; one with it (or built in) is fine.
	kdir := func(name, dep, builtin string) {
		d := filepath.Join(h.cfg.Paths.KernelsDir(), name)
		if err := os.MkdirAll(filepath.Join(d, "modules"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "kernel.json"), []byte(`{"name":"`+name+`"}`), 0o644); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(d, "modules", "modules.dep"), []byte(dep), 0o644)
		os.WriteFile(filepath.Join(d, "modules", "modules.builtin"), []byte(builtin), 0o644)
	}
	kdir("debian", "kernel/fs/fuse/virtiofs.ko: kernel/fs/fuse/fuse.ko\nkernel/fs/fuse/fuse.ko:\n", "")
	kdir("builtin", "", "kernel/fs/fuse/virtiofs.ko\n")
	expect(t, mustFind(t, h.run(), CheckVirtiofs), OK, "available", "")
	kdir("tiny", "kernel/fs/ext4/ext4.ko:\n", "")
	expect(t, mustFind(t, h.run(), CheckVirtiofs), Warn, "kernel tiny has no virtiofs module", "banger kernel pull")
}
