package vmm

import (
	"fmt"
	"net"
	"os"
	"regexp"
)

// tapRe is a Linux interface name (IFNAMSIZ 16, with the NUL).
var tapRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$`)

// ValidateShared checks what every driver requires of a spec alike: the
// VM directory exists, the initrd (when given) is a regular file, and a
// network names a valid tap and MAC. Each driver adds its own rules (ids,
// kernel form, disks, sizes). Errors wrap ErrInvalidSpec.
func ValidateShared(spec Spec) error {
	if st, err := os.Stat(spec.Dir); err != nil || !st.IsDir() {
		return Invalid("vm dir %q is not a directory", spec.Dir)
	}
	if spec.Initrd != "" {
		if err := RegularFile(spec.Initrd); err != nil {
			return Invalid("initrd: %v", err)
		}
	}
	if spec.Net != nil {
		if !tapRe.MatchString(spec.Net.Tap) {
			return Invalid("tap name %q is not a valid interface name", spec.Net.Tap)
		}
		if _, err := net.ParseMAC(spec.Net.MAC); err != nil || len(spec.Net.MAC) != 17 {
			return Invalid("mac %q: want xx:xx:xx:xx:xx:xx", spec.Net.MAC)
		}
	}
	return nil
}

// Invalid is a spec error: ErrInvalidSpec with what is wrong.
func Invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, a...))
}
