package guestinit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Image mode: banger's init prepares the rootfs (identity, network, keys),
// installs the agent as a systemd service and hands PID 1 to the image's
// own init. What it leaves behind is what systemd expects of an initrd:
// /dev, /proc, /sys and /run mounted, the root mounted read-write, and the
// interface addressed through netlink (a minbase image runs no network
// manager that would flush it).

const imageWantsDir = "/etc/systemd/system/multi-user.target.wants"

// imageInits are tried in order; /sbin/init is systemd-sysv's link.
var imageInits = []string{"/sbin/init", "/lib/systemd/systemd", "/usr/lib/systemd/systemd"}

func (b *boot) installAgentService(context.Context) error {
	// /proc/self/exe still reaches this binary after the initramfs is gone.
	if err := copyExecutable("/proc/self/exe", imageAgentPath); err != nil {
		return fmt.Errorf("install agent binary: %w", err)
	}
	return installUnit("/", imageAgentUnit, agentUnit(imageAgentPath, AgentArgs(b.cfg, b.opts.Version)))
}

// installHostKeyService has systemd make the SSH host keys (images ship
// without them so that every VM gets its own) in parallel with the agent's
// start, instead of holding up the hand-over for the seconds ssh-keygen
// takes under TCG. An image without sshd needs none.
func (b *boot) installHostKeyService(context.Context) error {
	if _, err := os.Stat(sshdPath); err != nil {
		return nil
	}
	keygen, err := exec.LookPath("ssh-keygen")
	if err != nil {
		return fmt.Errorf("the image has %s but no ssh-keygen: %w", sshdPath, err)
	}
	return installUnit("/", imageHostKeyUnit, hostKeyUnit(keygen))
}

// installUnit writes a unit under root and enables it the way systemctl
// enable would (a link in multi-user.target.wants), since systemctl cannot
// run before systemd does. Units are rewritten at every boot: the agent's
// boot id changes.
func installUnit(root, unitPath, content string) error {
	name := filepath.Base(unitPath)
	if err := writeFileAtomic(filepath.Join(root, unitPath), []byte(content), 0o644); err != nil {
		return fmt.Errorf("write unit %s: %w", name, err)
	}
	wants := filepath.Join(root, imageWantsDir)
	if err := os.MkdirAll(wants, 0o755); err != nil {
		return fmt.Errorf("enable %s: %w", name, err)
	}
	link := filepath.Join(wants, name)
	if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("enable %s: %w", name, err)
	}
	if err := os.Symlink(unitPath, link); err != nil {
		return fmt.Errorf("enable %s: %w", name, err)
	}
	return nil
}

// agentUnit is the agent's systemd service. It starts early (no default
// dependencies: the host waits for it to call the VM ready) and finds its
// virtio-serial port through /sys itself, so it needs neither udev's
// /dev/virtio-ports links nor a device unit. It stops before shutdown so
// a power-off it asked for is not held up by its restart policy.
func agentUnit(bin string, args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = systemdQuote(a)
	}
	return fmt.Sprintf(`# Written by banger-init at every boot; edits are lost.
[Unit]
Description=banger guest agent
DefaultDependencies=no
After=local-fs.target
Conflicts=shutdown.target
Before=shutdown.target

[Service]
ExecStart=%s %s
Restart=always
RestartSec=1
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
`, systemdQuote(bin), strings.Join(quoted, " "))
}

// hostKeyUnit makes the missing SSH host keys before sshd starts (Debian
// names the service ssh, others sshd; ssh-keygen -A skips existing keys).
func hostKeyUnit(keygen string) string {
	return fmt.Sprintf(`# Written by banger-init at every boot; edits are lost.
[Unit]
Description=banger SSH host keys for this VM
DefaultDependencies=no
After=local-fs.target
Before=ssh.service sshd.service ssh.socket sshd.socket shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=%s -A

[Install]
WantedBy=multi-user.target
`, systemdQuote(keygen))
}

// systemdQuote renders one ExecStart word: plain when it is made of safe
// characters, otherwise double-quoted with systemd's escapes, and with %
// (specifiers) and $ (variables) doubled.
func systemdQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-/:=,+@", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "%", "%%", "$", "$$", "\n", `\n`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}

// execImageInit replaces this process by the image's init, which becomes
// PID 1. It returns only on failure.
func (b *boot) execImageInit(context.Context) error {
	init := findImageInit("/")
	if init == "" {
		return fmt.Errorf("the image has none of %s: use --init fast", strings.Join(imageInits, ", "))
	}
	b.printf("banger-init: handing over to %s", init)
	unix.Sync()
	// The image's init must start with default signal dispositions.
	signal.Reset()
	err := unix.Exec(init, []string{init}, os.Environ())
	return fmt.Errorf("exec %s: %w", init, err)
}

// findImageInit returns the first executable init under root, as a path
// inside root, or "".
func findImageInit(root string) string {
	for _, p := range imageInits {
		fi, err := os.Stat(filepath.Join(root, p))
		if err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
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
	if err := os.Chmod(tmp, 0o755); err != nil { // umask
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}
