package guestinit

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// mountShares mounts each virtio-fs share the config lists (after the
// switch to the real root, before the agent reports ready): a VM asked for
// its shares, so one that cannot be mounted fails the boot.
func (b *boot) mountShares(context.Context) error {
	for _, m := range b.cfg.Mounts {
		if err := os.MkdirAll(m.Path, 0o755); err != nil {
			return fmt.Errorf("create mount point %s for share %s: %w", m.Path, m.Tag, err)
		}
		flags := uintptr(unix.MS_NODEV)
		if m.ReadOnly {
			flags |= unix.MS_RDONLY
		}
		if err := unix.Mount(m.Tag, m.Path, "virtiofs", flags, ""); err != nil {
			return fmt.Errorf("mount share %s at %s: %w", m.Tag, m.Path, err)
		}
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		b.printf("banger-init: share %s mounted at %s (%s)", m.Tag, m.Path, mode)
	}
	return nil
}
