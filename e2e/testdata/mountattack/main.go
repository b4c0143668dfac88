// Command mountattack runs inside a guest, as root, against a virtio-fs
// share and reports (one line per attempt) what it could reach. The e2e
// test (e2e/mounts_test.go) builds it statically, drops it into the share
// and checks, on the host, that nothing outside the share was read or
// changed. Usage: mountattack SHARE SECRET_MARKER HOST_OUTSIDE_DIR HOST_INO...
package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 4 {
		fmt.Println("usage: mountattack SHARE MARKER OUTSIDE [INO...]")
		os.Exit(2)
	}
	share, marker, outside := os.Args[1], []byte(os.Args[2]), os.Args[3]
	leak := func(what string, b []byte) {
		if bytes.Contains(b, marker) {
			fmt.Printf("LEAK %s\n", what)
		}
	}
	try := func(what string, err error) {
		if err != nil {
			fmt.Printf("refused %s: %v\n", what, err)
		} else {
			fmt.Printf("allowed %s\n", what)
		}
	}

	// 1. Symlinks the host planted, pointing out of the share.
	for _, l := range []string{"abs-link", "rel-link", "dir-link/secret"} {
		b, err := os.ReadFile(filepath.Join(share, l))
		leak("read "+l, b)
		try("read through "+l, err)
	}
	// 2. ".." from the share's root, as far as it goes.
	if fd, err := unix.Open(share, unix.O_PATH|unix.O_DIRECTORY, 0); err == nil {
		for i := 0; i < 8; i++ {
			nfd, err := unix.Openat(fd, "..", unix.O_PATH|unix.O_DIRECTORY, 0)
			if err != nil {
				break
			}
			unix.Close(fd)
			fd = nfd
		}
		unix.Close(fd)
	}
	// 3. The host's absolute paths, as the guest sees them.
	b, err := os.ReadFile(filepath.Join(outside, "secret"))
	leak("read host path", b)
	try("read host path "+outside, err)
	try("write host path", os.WriteFile(filepath.Join(outside, "sentinel"), []byte("pwned\n"), 0o644))
	// 4. Writes through a symlink the guest makes, pointing at the host's
	// sentinel.
	try("symlink to host sentinel", os.Symlink(filepath.Join(outside, "sentinel"), filepath.Join(share, "evil")))
	try("write through own symlink", os.WriteFile(filepath.Join(share, "evil"), []byte("pwned\n"), 0o644))
	try("symlink to ../outside", os.Symlink("../outside/sentinel", filepath.Join(share, "evil-rel")))
	try("write through own relative symlink", os.WriteFile(filepath.Join(share, "evil-rel"), []byte("pwned\n"), 0o644))
	// 5. Hard links: into the share from the guest's own files, and of a
	// host-planted symlink.
	try("hardlink guest /etc/passwd into share", unix.Link("/etc/passwd", filepath.Join(share, "hl-passwd")))
	try("hardlink planted symlink", unix.Linkat(unix.AT_FDCWD, filepath.Join(share, "abs-link"), unix.AT_FDCWD, filepath.Join(share, "hl-abs"), 0))
	b, err = os.ReadFile(filepath.Join(share, "hl-abs"))
	leak("read hardlinked symlink", b)
	try("read through hardlinked symlink", err)
	// 6. Devices, set-uid, file capabilities.
	try("mknod char 1,3", unix.Mknod(filepath.Join(share, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	if err := os.WriteFile(filepath.Join(share, "suid"), []byte("#!/bin/sh\n"), 0o755); err == nil {
		try("chmod 4755", os.Chmod(filepath.Join(share, "suid"), 0o4755|os.ModeSetuid))
		try("chown 0:0", os.Chown(filepath.Join(share, "suid"), 0, 0)) // guest root is the owner: a no-op
		try("chown 1000:1000", os.Chown(filepath.Join(share, "suid"), 1000, 1000))
		try("setxattr security.capability", unix.Setxattr(filepath.Join(share, "suid"), "security.capability", []byte{1, 0, 0, 2, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0))
		try("setxattr trusted.x", unix.Setxattr(filepath.Join(share, "suid"), "trusted.x", []byte("y"), 0))
	}
	// 7. File handles: the share's own, then forged ones (node ids and the
	// host inode numbers passed in) opened on the share's mount.
	mfd, err := unix.Open(share, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		fmt.Printf("open share: %v\n", err)
		return
	}
	fh, _, err := unix.NameToHandleAt(unix.AT_FDCWD, filepath.Join(share, "inside.txt"), 0)
	try("name_to_handle_at", err)
	htype, hsize := int32(0x81), 12 // fuse's handle: node id (2 x u32) + generation
	if err == nil {
		htype, hsize = fh.Type(), len(fh.Bytes())
		fmt.Printf("handle type %#x size %d\n", htype, hsize)
		f, err := unix.OpenByHandleAt(mfd, fh, unix.O_RDONLY)
		try("open_by_handle_at own handle", err)
		if err == nil {
			unix.Close(f)
		}
	}
	var ids []uint64
	for i := uint64(0); i < 4096; i++ {
		ids = append(ids, i)
	}
	for _, a := range os.Args[4:] {
		if n, err := strconv.ParseUint(a, 10, 64); err == nil {
			ids = append(ids, n)
		}
	}
	opened, leaked := 0, 0
	for _, id := range ids {
		for gen := uint32(0); gen < 2; gen++ {
			raw := make([]byte, max(hsize, 12))
			binary.LittleEndian.PutUint32(raw[0:], uint32(id>>32))
			binary.LittleEndian.PutUint32(raw[4:], uint32(id))
			binary.LittleEndian.PutUint32(raw[8:], gen)
			f, err := unix.OpenByHandleAt(mfd, unix.NewFileHandle(htype, raw), unix.O_RDONLY)
			if err != nil {
				continue
			}
			opened++
			buf := make([]byte, 1<<16)
			n, _ := unix.Read(f, buf)
			if bytes.Contains(buf[:max(n, 0)], marker) {
				leaked++
			}
			// A directory handle: list it, looking for the outside names.
			if names, err := readdirnames(f); err == nil {
				for _, nm := range names {
					if nm == "secret" || nm == "sentinel" {
						fmt.Printf("LEAK handle %d lists %s\n", id, nm)
					}
				}
			}
			unix.Close(f)
		}
	}
	fmt.Printf("forged handles opened %d, leaked %d\n", opened, leaked)
	if leaked > 0 {
		fmt.Println("LEAK forged handle")
	}
	fmt.Println("attack done")
}

func readdirnames(fd int) ([]string, error) {
	d := os.NewFile(uintptr(must(unix.Dup(fd))), "h")
	defer d.Close()
	return d.Readdirnames(-1)
}

func must(fd int, err error) int {
	if err != nil {
		return -1
	}
	return fd
}
