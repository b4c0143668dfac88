package guestinit

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/guest/guestconfig"
	"github.com/bangerdev/banger/internal/model"
)

// Snapshot and clone support on the guest side: the agent server's
// Freeze, Thaw and Reidentify hooks.

// Linux's FIFREEZE/FITHAW (_IOWR('X', 119/120, int)).
const (
	fiFreeze = 0xc0045877
	fiThaw   = 0xc0045878
)

// bootedMarker is written by banger-init once every boot step is done
// (sshd's host keys made): a snapshot taken earlier would catch init half
// way, and a clone would finish that boot step concurrently with its own
// identity change.
const bootedMarker = "/run/banger-init.booted"

func markBooted() { _ = os.WriteFile(bootedMarker, nil, 0o644) }

// waitBooted waits (bounded) for banger-init to finish booting; under the
// image's own init there is no marker and nothing to wait for.
func (g *Identity) waitBooted(ctx context.Context) error {
	if g.InitMode == model.InitImage {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for {
		if _, err := os.Stat(bootedMarker); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("banger-init has not finished booting: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Identity is the agent's identity hooks, for one init mode.
type Identity struct {
	Log      *slog.Logger
	InitMode model.InitMode

	mu       sync.Mutex
	autoThaw *time.Timer

	// One identity change at a time; a repeated call for the same id (a
	// host retrying after a lost answer) gets the first answer again.
	reMu   sync.Mutex
	doneID string
	done   agentproto.Reidentified
}

// Freeze syncs and freezes the root filesystem, thawing it by itself after
// autoThaw unless Thaw comes first.
func (g *Identity) Freeze(ctx context.Context, autoThaw time.Duration) error {
	if err := g.waitBooted(ctx); err != nil {
		return err
	}
	unix.Sync()
	if err := rootIoctl(fiFreeze); err != nil && !errors.Is(err, unix.EBUSY) { // EBUSY: already frozen
		return fmt.Errorf("freeze /: %w", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.autoThaw != nil {
		g.autoThaw.Stop()
	}
	g.autoThaw = time.AfterFunc(autoThaw, func() {
		if err := rootIoctl(fiThaw); err == nil {
			g.Log.Warn("root filesystem thawed after the host did not")
		}
	})
	return nil
}

// Thaw thaws the root filesystem; thawing one that is not frozen is fine.
func (g *Identity) Thaw(context.Context) error {
	g.mu.Lock()
	if g.autoThaw != nil {
		g.autoThaw.Stop()
		g.autoThaw = nil
	}
	g.mu.Unlock()
	if err := rootIoctl(fiThaw); err != nil && !errors.Is(err, unix.EINVAL) { // EINVAL: not frozen
		return fmt.Errorf("thaw /: %w", err)
	}
	return nil
}

func rootIoctl(req uint) error {
	fd, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// Reidentify makes a clone its own machine: its CRNG reseeded with the
// host's entropy first (everything after draws on it), then its root
// filesystem thawed (the snapshot froze it), host name, machine-id, SSH
// host keys (sshd restarted to serve them) and network identity.
func (g *Identity) Reidentify(ctx context.Context, id agentproto.Identity) (agentproto.Reidentified, error) {
	g.reMu.Lock()
	defer g.reMu.Unlock()
	if g.doneID == id.BootID {
		g.Log.Info("identity already taken", "hostname", id.Hostname)
		return g.done, nil
	}
	out, err := g.reidentify(ctx, id)
	if err != nil {
		return out, err
	}
	g.doneID, g.done = id.BootID, out
	return out, nil
}

func (g *Identity) reidentify(ctx context.Context, id agentproto.Identity) (agentproto.Reidentified, error) {
	var out agentproto.Reidentified
	g.Log.Info("taking a new identity", "hostname", id.Hostname)
	if err := reseedCRNG(id.Entropy); err != nil {
		return out, err
	}
	if err := g.Thaw(ctx); err != nil {
		return out, err
	}
	if err := g.waitBooted(ctx); err != nil {
		return out, err
	}
	if err := unix.Sethostname([]byte(id.Hostname)); err != nil {
		return out, fmt.Errorf("sethostname: %w", err)
	}
	cfg := &guestconfig.Config{Hostname: id.Hostname}
	if id.OldMAC != "" {
		cfg.Network = &guestconfig.Network{Address: id.Address, Gateway: id.Gateway, MAC: id.MAC}
	}
	if err := writeIdentity("/", cfg); err != nil {
		return out, err
	}
	if err := writeFileAtomic("/etc/machine-id", []byte(id.MachineID+"\n"), 0o444); err != nil {
		return out, err
	}
	if id.OldMAC != "" {
		if err := renumber(g.Log, id); err != nil {
			return out, err
		}
	}
	keys, err := g.renewHostKeys(ctx)
	if err != nil {
		return out, err
	}
	out.SSHHostKeys = keys
	unix.Sync()
	return out, nil
}

// reseedCRNG credits the host's entropy to the input pool and forces the
// CRNG to reseed from it (RNDADDENTROPY, RNDRESEEDCRNG).
func reseedCRNG(entropy []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open /dev/urandom: %w", err)
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	buf := make([]byte, 8+(len(entropy)+3)/4*4)
	binary.NativeEndian.PutUint32(buf[0:], uint32(len(entropy)*8))
	binary.NativeEndian.PutUint32(buf[4:], uint32(len(entropy)))
	copy(buf[8:], entropy)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		return fmt.Errorf("add host entropy: %w", errno)
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); errno != 0 {
		return fmt.Errorf("reseed crng: %w", errno)
	}
	return nil
}

// renumber moves the interface that had OldMAC to the new MAC and address.
func renumber(log *slog.Logger, id agentproto.Identity) error {
	old, _ := net.ParseMAC(id.OldMAC)
	mac, _ := net.ParseMAC(id.MAC)
	link, err := linkByMAC(old)
	if err != nil {
		if link, err = linkByMAC(mac); err != nil { // a retried call did it already
			return err
		}
	}
	name := link.Attrs().Name
	if err := netlink.LinkSetDown(link); err != nil {
		return fmt.Errorf("set %s down: %w", name, err)
	}
	if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
		return fmt.Errorf("set %s mac to %s: %w", name, mac, err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list %s addresses: %w", name, err)
	}
	for _, a := range addrs {
		if err := netlink.AddrDel(link, &a); err != nil {
			return fmt.Errorf("remove %s from %s: %w", a.IPNet, name, err)
		}
	}
	// configureNetwork finds the link by its new MAC and brings it up.
	return configureNetwork(log, &guestconfig.Network{Address: id.Address, Gateway: id.Gateway, MAC: id.MAC})
}

// renewHostKeys replaces the SSH host keys (the clone's source's are in
// its disk) and restarts sshd so it serves them; it returns the public
// keys. No sshd, no keys.
func (g *Identity) renewHostKeys(ctx context.Context) ([]string, error) {
	if _, err := os.Stat(sshdPath); err != nil {
		return nil, nil
	}
	old, _ := filepath.Glob("/etc/ssh/ssh_host_*_key*")
	for _, p := range old {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove old host key: %w", err)
		}
	}
	// Made in Go from the just-reseeded CRNG: an ssh-keygen process per
	// key costs seconds under software emulation.
	var keys []string
	for _, typ := range []string{"ed25519", "ecdsa"} {
		path := "/etc/ssh/ssh_host_" + typ + "_key"
		pub, err := writeHostKey(typ, path)
		if err != nil {
			return nil, fmt.Errorf("generate ssh %s host key: %w", typ, err)
		}
		keys = append(keys, pub)
	}
	return keys, g.restartSSHD(ctx)
}

// writeHostKey makes a host key of type typ ("ed25519" or "ecdsa", P-256)
// at path (OpenSSH format, 0600) and path.pub, returning the public key in
// authorized_keys form.
func writeHostKey(typ, path string) (string, error) {
	var priv crypto.Signer
	var err error
	switch typ {
	case "ed25519":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case "ecdsa":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return "", fmt.Errorf("unknown host key type %q", typ)
	}
	if err != nil {
		return "", err
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return "", err
	}
	sshPub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		return "", err
	}
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
	for _, p := range []string{path, path + ".pub"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("remove old host key: %w", err)
		}
	}
	if err := writeFileAtomic(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return "", err
	}
	if err := writeFileAtomic(path+".pub", []byte(pub+"\n"), 0o644); err != nil {
		return "", err
	}
	return pub, nil
}

// restartSSHD makes sshd load the new host keys: under banger-init the
// listener (a child of PID 1) is ended and its supervisor starts it again;
// under the image's systemd the service is restarted.
func (g *Identity) restartSSHD(ctx context.Context) error {
	if g.InitMode == model.InitImage {
		for _, unit := range []string{"ssh", "sshd"} {
			if exec.CommandContext(ctx, "systemctl", "try-restart", unit+".service").Run() == nil {
				return nil
			}
		}
		return errors.New("restart sshd: systemctl try-restart failed for ssh and sshd")
	}
	pids, err := sshdListeners()
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if err := unix.Kill(pid, unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("restart sshd: %w", err)
		}
	}
	return nil
}

// sshdListeners are the sshd processes whose parent is PID 1 (sessions are
// children of a listener).
func sshdListeners() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || exe != sshdPath {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …: comm may hold spaces, so cut after ')'.
		i := bytes.LastIndexByte(st, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(st[i+1:]))
		if len(f) > 1 && f[1] == "1" {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}
