package guestinit

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Image mode: banger's init prepares the rootfs, installs the agent as a
// systemd service and hands PID 1 to the image's own init.

func (b *boot) installAgentService(context.Context) error {
	// /proc/self/exe still reaches this binary after the initramfs is gone.
	if err := copyExecutable("/proc/self/exe", imageAgentPath); err != nil {
		return fmt.Errorf("install agent binary: %w", err)
	}
	unit := agentUnit(imageAgentPath, AgentArgs(b.cfg, b.opts.Version))
	if err := writeFileAtomic(imageAgentUnit, []byte(unit), 0o644); err != nil {
		return err
	}
	wants := "/etc/systemd/system/multi-user.target.wants"
	if err := os.MkdirAll(wants, 0o755); err != nil {
		return fmt.Errorf("enable agent service: %w", err)
	}
	link := filepath.Join(wants, filepath.Base(imageAgentUnit))
	_ = os.Remove(link)
	if err := os.Symlink(imageAgentUnit, link); err != nil {
		return fmt.Errorf("enable agent service: %w", err)
	}
	return nil
}

func agentUnit(bin string, args []string) string {
	return fmt.Sprintf(`# Written by banger-init at every boot.
[Unit]
Description=banger guest agent
DefaultDependencies=no
After=local-fs.target

[Service]
ExecStart=%s %s
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
`, bin, strings.Join(args, " "))
}

func (b *boot) execImageInit(context.Context) error {
	for _, init := range []string{"/sbin/init", "/lib/systemd/systemd", "/usr/lib/systemd/systemd"} {
		if _, err := os.Stat(init); err != nil {
			continue
		}
		b.printf("banger-init: handing over to %s", init)
		err := unix.Exec(init, []string{init}, os.Environ())
		return fmt.Errorf("exec %s: %w", init, err)
	}
	return fmt.Errorf("the image has no /sbin/init")
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".banger-tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}
