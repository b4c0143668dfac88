package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	sdk "github.com/firecracker-microvm/firecracker-go-sdk"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/vmm"
)

// Launcher starts a VM's jailer and reaches its API socket. The owner
// daemon's is the root helper (HelperLauncher): the jailer needs root, and
// the jail is not the owner's to open. DirectLauncher runs it from this
// process (root only) and is what the SDK-level tests drive.
type Launcher interface {
	// Validate checks what this launcher needs of spec.
	Validate(spec vmm.Spec) error
	// Launch starts the jailer of b.Spec. The returned API connection may
	// be nil (the driver then dials through DialAPI).
	Launch(ctx context.Context, b *Boot) (Launched, error)
	// DialAPI connects to the API socket of a running instance.
	DialAPI(ctx context.Context, inst vmm.Instance) (net.Conn, error)
	// Remove ends the instance's VMM (if it still runs) and removes its jail.
	Remove(ctx context.Context, inst vmm.Instance) error
	// BuildsJail: the launcher puts kernel, initrd and disks in the jail
	// itself, so the SDK must not link them (it only names them).
	BuildsJail() bool
	// Privileged: root runs the binaries, so they must be root-owned.
	Privileged() bool
}

// Launched is a started jailer.
type Launched struct {
	PID       int
	StartTime uint64
	API       net.Conn        // a connection to the API socket, or nil
	Exited    <-chan struct{} // closed when it exits; nil if not our child
}

// DirectLauncher runs the jailer from this process, detached, and dials
// the API socket by path.
type DirectLauncher struct{ d *Driver }

func (l *DirectLauncher) Validate(vmm.Spec) error { return nil }
func (l *DirectLauncher) BuildsJail() bool        { return false }
func (l *DirectLauncher) Privileged() bool        { return false }

// Launch starts the jailer (which execs firecracker under the same pid)
// and waits, bounded, for the API socket to appear.
func (l *DirectLauncher) Launch(ctx context.Context, b *Boot) (Launched, error) {
	d := l.d
	p, err := vmm.StartDetached(vmm.Command{Path: d.cfg.Jailer.JailerBinary, Args: d.jailerArgs(b.Config), LogPath: d.consolePath(b.Spec)})
	if err != nil {
		return Launched{}, err
	}
	launched := Launched{PID: p.PID, StartTime: p.StartTime, Exited: p.Exited()}
	sock := filepath.Join(d.jailRoot(b.Spec.ID), apiSockName)
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StartTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(sock); err == nil {
			return launched, nil
		}
		select {
		case <-p.Exited():
			tail, _ := vmm.TailFile(d.consolePath(b.Spec), 20)
			return launched, fmt.Errorf("jailer/firecracker exited during start-up (%v); output:\n%s", p.ExitErr(), tail)
		case <-ctx.Done():
			return launched, fmt.Errorf("firecracker api socket %s not answering: %w", sock, ctx.Err())
		case <-tick.C:
		}
	}
}

func (l *DirectLauncher) DialAPI(ctx context.Context, inst vmm.Instance) (net.Conn, error) {
	var dl net.Dialer
	return dl.DialContext(ctx, "unix", inst.ControlSocket)
}

// Remove kills the VMM and removes the jail. Its path comes from the
// driver's own settings and a validated id, never from persisted data.
func (l *DirectLauncher) Remove(ctx context.Context, inst vmm.Instance) error {
	if inst.PID > 0 {
		if err := vmm.KillAndWait(ctx, inst.PID, inst.PIDStartTime, l.d.cfg.StopTimeout); err != nil {
			return fmt.Errorf("kill vm %q: %w", inst.ID, err)
		}
	}
	if !idRe.MatchString(inst.ID) {
		return fmt.Errorf("clean up vm: refusing id %q", inst.ID)
	}
	if err := os.RemoveAll(l.d.jailDir(inst.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove jail of vm %q: %w", inst.ID, err)
	}
	return nil
}

// JailerHelper is the root helper's jailer methods (roothelper.Client).
type JailerHelper interface {
	StartJailer(ctx context.Context, vmID string) (*os.File, api.VMJailerStarted, error)
	ConnectJailer(ctx context.Context, vmID, socket string) (*os.File, api.VMJailerStarted, error)
	StopJailer(ctx context.Context, vmID string) error
}

// HelperLauncher has the root helper build the jail and run the jailer;
// the helper passes back a connection to the API socket.
type HelperLauncher struct{ h JailerHelper }

// NewHelperLauncher returns the launcher of the owner daemon.
func NewHelperLauncher(h JailerHelper) *HelperLauncher { return &HelperLauncher{h: h} }

func (l *HelperLauncher) BuildsJail() bool { return true }
func (l *HelperLauncher) Privileged() bool { return true }

// The helper takes a VM dir's files by fixed names (it computes every path
// itself); the root and config disks are already there under them.
const (
	helperKernel = "vmlinux"
	helperInitrd = "initrd.img"
)

var helperDisks = []string{"root.ext4", "config.img"}

// Validate: the disks must be the VM dir's root.ext4 (and config.img).
func (l *HelperLauncher) Validate(spec vmm.Spec) error {
	if len(spec.Disks) > len(helperDisks) {
		return fmt.Errorf("%w: the root helper jails %d disks at most (root and config)", vmm.ErrInvalidSpec, len(helperDisks))
	}
	for i, disk := range spec.Disks {
		if want := filepath.Join(spec.Dir, helperDisks[i]); filepath.Clean(disk.Path) != want {
			return fmt.Errorf("%w: disk %q must be %s for the root helper's jail", vmm.ErrInvalidSpec, disk.ID, want)
		}
	}
	return nil
}

// Launch puts the kernel and initrd in the VM dir under the names the
// helper takes, then has the helper start the jail.
func (l *HelperLauncher) Launch(ctx context.Context, b *Boot) (Launched, error) {
	if err := stageFile(b.Spec.Kernel.VMLinux, filepath.Join(b.Spec.Dir, helperKernel)); err != nil {
		return Launched{}, fmt.Errorf("stage kernel for the jail: %w", err)
	}
	if b.Spec.Initrd != "" {
		if err := stageFile(b.Spec.Initrd, filepath.Join(b.Spec.Dir, helperInitrd)); err != nil {
			return Launched{}, fmt.Errorf("stage initrd for the jail: %w", err)
		}
	}
	f, res, err := l.h.StartJailer(ctx, b.Spec.ID)
	if err != nil {
		return Launched{}, fmt.Errorf("root helper: %w", err)
	}
	conn, err := fileConn(f)
	if err != nil {
		_ = l.h.StopJailer(context.WithoutCancel(ctx), b.Spec.ID)
		return Launched{}, err
	}
	return Launched{PID: res.PID, StartTime: res.StartTime, API: conn}, nil
}

func (l *HelperLauncher) DialAPI(ctx context.Context, inst vmm.Instance) (net.Conn, error) {
	f, _, err := l.h.ConnectJailer(ctx, inst.ID, api.JailerSocketAPI)
	if err != nil {
		return nil, fmt.Errorf("root helper: %w", err)
	}
	return fileConn(f)
}

func (l *HelperLauncher) Remove(ctx context.Context, inst vmm.Instance) error {
	if err := l.h.StopJailer(ctx, inst.ID); err != nil {
		return fmt.Errorf("stop jail of vm %q: %w", inst.ID, err)
	}
	return nil
}

func fileConn(f *os.File) (net.Conn, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("use the api socket the root helper passed: %w", err)
	}
	return c, nil
}

// stageFile makes dst the content of src: a hard link where the
// filesystem allows, else a copy (the owner's own files, as the owner).
func stageFile(src, dst string) error {
	tmp := dst + ".tmp"
	_ = os.Remove(tmp)
	// A link only of our own file: the helper takes only the owner's.
	if st, err := os.Stat(src); err != nil || !ownedByUs(st) || os.Link(src, tmp) != nil {
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
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
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func ownedByUs(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}

// jailNames is the chroot strategy when the helper built the jail: it
// links nothing and names the files as the jail has them.
type jailNames struct{}

const jailNamesHandlerName = "banger.JailNames"

func (jailNames) AdaptHandlers(h *sdk.Handlers) error {
	if !h.FcInit.Has(sdk.CreateLogFilesHandlerName) {
		return sdk.ErrRequiredHandlerMissing
	}
	h.FcInit = h.FcInit.AppendAfter(sdk.CreateLogFilesHandlerName, sdk.Handler{
		Name: jailNamesHandlerName,
		Fn: func(ctx context.Context, m *sdk.Machine) error {
			m.Cfg.KernelImagePath = helperKernel
			if m.Cfg.InitrdPath != "" {
				m.Cfg.InitrdPath = helperInitrd
			}
			for i := range m.Cfg.Drives {
				m.Cfg.Drives[i].PathOnHost = sdk.String(helperDisks[i])
			}
			return nil
		},
	})
	return nil
}
