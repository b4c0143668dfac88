package qemu

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bangerdev/banger/internal/kvmprobe"
	"github.com/bangerdev/banger/internal/vmm"
)

// BaseCmdline is the kernel command line every banger guest gets; the
// spec's extra arguments follow it. ACPI (acpi=on) enumerates the
// virtio-mmio devices, so pci=off is safe.
const BaseCmdline = "console=ttyS0 reboot=t panic=-1 quiet pci=off"

// Paths are the per-VM files QEMU uses.
type Paths struct {
	QMP        string // QMP control socket
	Agent      string // virtio-serial agent socket
	ConsoleLog string // serial console (appended, bounded by TrimConsole)
	StderrLog  string // QEMU's own stdout/stderr
	Dir        string // the VM's directory: share sockets live there
}

// share is the vhost-user socket of the share tagged tag.
func (p Paths) share(tag string) string { return filepath.Join(p.Dir, "fs-"+tag+".sock") }

// escape makes a value safe inside QEMU's comma-separated option syntax,
// where a literal comma is written twice.
func escape(v string) string { return strings.ReplaceAll(v, ",", ",,") }

// ramID is microvm's default RAM block name (its default_ram_id): the
// migration stream names RAM blocks, so a file-backed RAM must use it.
const ramID = "microvm.ram"

// tapFD is the descriptor QEMU inherits an opened tap on: the first of
// ExtraFiles.
const tapFD = 3

// ExtraFiles are the descriptors QEMU inherits for spec, in the order Args
// numbers them from 3.
func ExtraFiles(spec vmm.Spec) []*os.File {
	if spec.Net != nil && spec.Net.File != nil {
		return []*os.File{spec.Net.File}
	}
	return nil
}

// Args builds QEMU's argument list for spec. The agent always gets a
// virtio-serial port (the driver's only agent transport).
func Args(spec vmm.Spec, p Paths, accel string) []string {
	cpu := "max"
	if accel == kvmprobe.AccelKVM {
		cpu = "host"
	}
	cmdline := BaseCmdline
	if extra := strings.TrimSpace(spec.Kernel.Cmdline); extra != "" {
		cmdline += " " + extra
	}
	machine := "microvm,accel=" + accel + ",acpi=on"
	if len(spec.Shares) > 0 {
		// vhost-user-fs needs guest memory virtiofsd can map.
		machine += ",memory-backend=mem"
	}
	if spec.Memory != nil {
		// Named as microvm's default RAM, so a state saved from either
		// kind of VM loads into the other.
		machine += ",memory-backend=" + ramID
	}
	a := []string{
		"-name", "banger-" + spec.ID + ",debug-threads=off",
		"-M", machine,
		"-cpu", cpu,
		"-smp", strconv.Itoa(spec.CPUs),
		"-m", strconv.Itoa(spec.MemoryMiB),
		"-nodefaults", "-no-user-config", "-nographic",
		"-chardev", "file,id=con,path=" + escape(p.ConsoleLog) + ",append=on",
		"-serial", "chardev:con",
		"-kernel", spec.Kernel.Path,
		"-append", cmdline,
	}
	if len(spec.Shares) > 0 {
		// virtiofsd's libvhost-user refuses legacy virtio, microvm's
		// virtio-mmio default; VMs without shares keep it (their saved
		// states stay loadable).
		a = append(a, "-global", "virtio-mmio.force-legacy=false",
			"-object", "memory-backend-memfd,id=mem,size="+strconv.Itoa(spec.MemoryMiB)+"M,share=on")
	}
	if m := spec.Memory; m != nil {
		share := "off"
		if m.Shared {
			share = "on"
		}
		a = append(a, "-object", "memory-backend-file,id="+ramID+",size="+strconv.Itoa(spec.MemoryMiB)+"M,mem-path="+escape(m.Path)+",share="+share)
	}
	for i, sh := range spec.Shares {
		id := "fs" + strconv.Itoa(i)
		a = append(a,
			"-chardev", "socket,id="+id+",path="+escape(p.share(sh.Tag)),
			"-device", "vhost-user-fs-device,chardev="+id+",tag="+sh.Tag)
	}
	if spec.Initrd != "" {
		a = append(a, "-initrd", spec.Initrd)
	}
	for _, d := range spec.Disks {
		drive := "id=" + d.ID + ",file=" + escape(d.Path) + ",format=raw,if=none"
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		a = append(a, "-drive", drive, "-device", "virtio-blk-device,drive="+d.ID)
	}
	if spec.Net != nil {
		netdev := "tap,id=net0,ifname=" + spec.Net.Tap + ",script=no,downscript=no"
		if spec.Net.File != nil {
			// Already open (ExtraFiles): QEMU needs no access to /dev/net/tun.
			netdev = "tap,id=net0,fd=" + strconv.Itoa(tapFD)
		}
		a = append(a,
			"-netdev", netdev,
			"-device", "virtio-net-device,netdev=net0,mac="+spec.Net.MAC)
	}
	a = append(a,
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path="+escape(p.Agent)+",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name="+spec.Agent.PortName)
	a = append(a,
		"-qmp", "unix:"+escape(p.QMP)+",server=on,wait=off",
		"-no-reboot")
	return a
}
