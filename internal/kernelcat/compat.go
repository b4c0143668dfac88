package kernelcat

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"

	"github.com/bangerdev/banger/internal/model"
)

// firecrackerBuiltins must be =y: Firecracker has no ACPI or PCI to find
// virtio devices, so they come from the command line, and it has no
// initramfs-free way to load the drivers before the root disk is needed.
var firecrackerBuiltins = []string{
	"CONFIG_VIRTIO_MMIO",
	"CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES",
	"CONFIG_VIRTIO_BLK",
	"CONFIG_VIRTIO_NET",
}

// parseConfig reads a kernel .config into option → value ("y", "m", …).
func parseConfig(data []byte) map[string]string {
	cfg := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			cfg[k] = strings.Trim(v, `"`)
		}
	}
	return cfg
}

// vmmSupport decides which VMMs can boot a kernel, and why not.
//   - QEMU (-M microvm) boots a bzImage, or an ELF vmlinux with a PVH note.
//   - Firecracker needs an ELF vmlinux and the virtio-mmio, block and net
//     drivers built in with command-line device discovery.
func vmmSupport(hasBzImage, hasVMLinux, pvh bool, config []byte) (vmms []model.VMMKind, notes []string) {
	switch {
	case hasBzImage:
		vmms = append(vmms, model.VMMQEMU)
	case hasVMLinux && pvh:
		vmms = append(vmms, model.VMMQEMU)
	case hasVMLinux:
		notes = append(notes, "qemu: the ELF vmlinux has no PVH entry note and there is no bzImage")
	}
	if !hasVMLinux {
		return vmms, append(notes, "firecracker: no uncompressed ELF vmlinux")
	}
	if config == nil {
		return vmms, append(notes, "firecracker: no kernel config to check for built-in virtio-mmio drivers")
	}
	cfg := parseConfig(config)
	var missing []string
	for _, opt := range firecrackerBuiltins {
		if v := cfg[opt]; v != "y" {
			if v == "" {
				v = "not set"
			}
			missing = append(missing, fmt.Sprintf("%s=%s", opt, v))
		}
	}
	if len(missing) > 0 {
		return vmms, append(notes, "firecracker: needs virtio-mmio with command-line devices, virtio-blk and virtio-net built in (=y); this kernel has "+strings.Join(missing, ", "))
	}
	return append(vmms, model.VMMFirecracker), notes
}
