package virtiofs

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// noCredSwitch makes setresuid and setresgid succeed without doing
// anything, for this process and what it execs (a seccomp filter survives
// execve and stacks under virtiofsd's own, the stricter answer winning).
//
// virtiofsd switches to the guest caller's uid and gid before it creates a
// file, so the new file belongs to the caller. In its user namespace only
// uid and gid 0 are mapped (to the owner): for any other guest user the
// switch fails with EINVAL, and that user can create nothing in the share.
// With the switch a no-op, every request runs as uid 0 of the namespace,
// that is as the owner: what any guest user creates lands on the host
// owned by the owner. It gives the guest no more than its root already
// has; a chown to another id still fails (unmapped), and the guest kernel
// still checks the guest's own permissions (virtio-fs mounts with
// default_permissions).
func noCredSwitch() error {
	var arch uint32
	switch runtime.GOARCH {
	case "amd64":
		arch = unix.AUDIT_ARCH_X86_64
	case "arm64":
		arch = unix.AUDIT_ARCH_AARCH64
	default:
		return fmt.Errorf("no seccomp filter for %s", runtime.GOARCH)
	}
	const (
		offNr   = 0 // struct seccomp_data
		offArch = 4
		ld      = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq     = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret     = unix.BPF_RET | unix.BPF_K
	)
	// Another ABI's calls pass untouched: virtiofsd makes none, and a real
	// switch only ever fails closed (EINVAL).
	prog := []unix.SockFilter{
		{Code: ld, K: offArch},
		{Code: jeq, K: arch, Jt: 0, Jf: 3},
		{Code: ld, K: offNr},
		{Code: jeq, K: unix.SYS_SETRESUID, Jt: 2, Jf: 0},
		{Code: jeq, K: unix.SYS_SETRESGID, Jt: 1, Jf: 0},
		{Code: ret, K: unix.SECCOMP_RET_ALLOW},
		{Code: ret, K: unix.SECCOMP_RET_ERRNO | 0}, // errno 0: the call returns 0
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	// TSYNC puts the filter on every thread, whichever one execs.
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
		return fmt.Errorf("install seccomp filter: %w", errno)
	}
	runtime.KeepAlive(prog)
	return nil
}
