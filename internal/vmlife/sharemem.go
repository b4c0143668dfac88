package vmlife

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/vmm"
)

// Memory sharing. A snapshot's full state is split, right after it is
// taken, into the guest's RAM as a file of its own ("ram") and the device
// state alone (which replaces "state"). A clone maps that RAM file
// copy-on-write (QEMU memory-backend-file, share=off) and loads only the
// devices (x-ignore-shared): pages no clone has written are one copy in
// the page cache for every clone of the snapshot, and loading a clone no
// longer copies its RAM. The split runs in a throwaway VMM that loads the
// state paused and saves it again; the guest never runs there. A driver
// that cannot split (or a split that fails) leaves the full state: clones
// then load their RAM from it, as before.

// memorySharer is a driver that can split a saved state.
type memorySharer interface {
	ShareMemory(ctx context.Context, spec vmm.Spec, statePath, ramPath, devPath string) error
}

func snapshotMemoryFile(sn model.Snapshot) string { return filepath.Join(sn.Dir, "ram") }

// shareMemory splits sn's state into RAM and devices; vm is the snapshot's
// source (its disks give the device shapes), tapFree says its VMM ended. It fills sn's memory fields,
// or returns an error leaving sn and its files as they were.
func (m *Manager) shareMemory(ctx context.Context, sn *model.Snapshot, vm model.VM, drv vmm.Driver, tapFree bool) (err error) {
	ms, ok := drv.(memorySharer)
	if !ok {
		return fmt.Errorf("the %s driver cannot keep memory apart", drv.Name())
	}
	if len(vm.Mounts) > 0 {
		return errors.New("a vm with shared directories keeps its memory in the state")
	}
	if m.d.Initramfs == nil {
		return errors.New("no initramfs builder")
	}
	k, err := m.d.Store.GetKernel(ctx, vm.Kernel)
	if err != nil {
		return fmt.Errorf("kernel %q: %w", vm.Kernel, err)
	}
	initrd, err := m.d.Initramfs(ctx, k)
	if err != nil {
		return err
	}
	work := filepath.Join(sn.Dir, "split")
	if err := os.Mkdir(work, 0o700); err != nil {
		return err
	}
	defer os.RemoveAll(work)
	ram, dev := snapshotMemoryFile(*sn), filepath.Join(sn.Dir, "devstate")
	defer func() {
		if err != nil {
			_ = os.Remove(ram)
			_ = os.Remove(dev)
		}
	}()
	// The throwaway VMM opens disks shaped as the VM's but never reads
	// them: sparse scratch files of the same sizes.
	var disks []vmm.Disk
	for _, d := range []struct {
		id, src string
		ro      bool
	}{{"root", snapshotDisk(*sn), false}, {"config", configDisk(vm), true}} {
		st, err := os.Stat(d.src)
		if err != nil {
			return fmt.Errorf("%s disk: %w", d.id, err)
		}
		p := filepath.Join(work, d.id+".img")
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			return err
		}
		if err := os.Truncate(p, st.Size()); err != nil {
			return err
		}
		disks = append(disks, vmm.Disk{ID: d.id, Path: p, ReadOnly: d.ro})
	}
	spec := vmm.Spec{
		ID: "split-" + sn.ID, Name: sn.Name, Dir: work,
		Kernel: vmm.Kernel{Path: k.Path, VMLinux: k.VMLinux}, Initrd: initrd, Disks: disks,
		CPUs: sn.CPUs, MemoryMiB: sn.MemoryMiB,
		Agent:      vmm.Agent{Transport: model.TransportVirtioSerial, PortName: AgentPortName},
		ConsoleLog: filepath.Join(work, "console.log"),
	}
	if sn.MAC != "" {
		// The NIC's features (and so its saved state) depend on its tap:
		// the source's own, free once its VMM ended. The guest never runs,
		// so nothing goes through it.
		if !tapFree {
			return errors.New("the source vm runs on: its tap is busy (snapshot with --stop, or templates, keep memory apart)")
		}
		if m.d.Network == nil || vm.Tap == "" {
			return errors.New("the source vm's tap is unavailable")
		}
		f, err := m.d.Network.OpenTap(ctx, vm)
		if err != nil {
			return fmt.Errorf("open the source vm's tap: %w", err)
		}
		defer f.Close()
		spec.Net = &vmm.Net{Tap: vm.Tap, MAC: sn.MAC, File: f}
	}
	if err := ms.ShareMemory(ctx, spec, snapshotStateFile(*sn), ram, dev); err != nil {
		return err
	}
	if err := syncFile(ram); err != nil {
		return fmt.Errorf("sync memory file: %w", err)
	}
	size, sum, err := hashFile(ram)
	if err != nil {
		return fmt.Errorf("checksum memory file: %w", err)
	}
	if size != int64(sn.MemoryMiB)<<20 {
		return fmt.Errorf("memory file is %d bytes, want %d", size, int64(sn.MemoryMiB)<<20)
	}
	if err := os.Rename(dev, snapshotStateFile(*sn)); err != nil {
		return err
	}
	sn.MemoryBytes, sn.MemorySHA = size, sum
	return nil
}

func syncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// fileStamp is a file's identity as far as a changed or replaced file
// shows in it: a write moves mtime and ctime, a replacement the inode.
type fileStamp struct {
	dev, ino         uint64
	size             int64
	mtimeNs, ctimeNs int64
	sha              string
}

func stampOf(p string) (fileStamp, error) {
	st, err := os.Stat(p)
	if err != nil {
		return fileStamp{}, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fileStamp{}, fmt.Errorf("stat %s: no inode", p)
	}
	return fileStamp{dev: sys.Dev, ino: sys.Ino, size: st.Size(), mtimeNs: sys.Mtim.Nano(), ctimeNs: sys.Ctim.Nano()}, nil
}

// verifiedHash checks p against a recorded size and SHA-256, hashing it
// only when it changed since it last matched (its stamp). The snapshot
// files are the owner's own, under the owner's home: this guards against
// corruption (a truncated copy, a bad disk, a stray edit), which always
// moves size, mtime or ctime, not against the owner forging a file.
func (m *Manager) verifiedHash(p string, size int64, sha string) (gotSize int64, gotSHA string, err error) {
	before, err := stampOf(p)
	if err != nil {
		return 0, "", err
	}
	m.mu.Lock()
	cached, ok := m.verified[p]
	m.mu.Unlock()
	if ok && cached.sha == sha && cached == (fileStamp{before.dev, before.ino, before.size, before.mtimeNs, before.ctimeNs, sha}) && before.size == size {
		return size, sha, nil
	}
	if gotSize, gotSHA, err = hashFile(p); err != nil {
		return 0, "", err
	}
	after, err := stampOf(p)
	if err == nil && after == before && gotSize == size && gotSHA == sha {
		after.sha = sha
		m.mu.Lock()
		m.verified[p] = after
		m.mu.Unlock()
	}
	return gotSize, gotSHA, nil
}

// forgetVerified drops the cached checks of files under dir.
func (m *Manager) forgetVerified(dir string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for p := range m.verified {
		if strings.HasPrefix(p, dir+string(filepath.Separator)) {
			delete(m.verified, p)
		}
	}
}
