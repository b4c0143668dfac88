// Package firecracker drives Firecracker microVMs through firecracker-go-sdk
// v1.0.0, always under the jailer (chroot, per-VM uid/gid, cgroups).
//
// It needs a KVM host that can run a standard kernel (not PVM) with the
// firecracker and jailer binaries installed, and an uncompressed ELF vmlinux
// with virtio built in. Neither exists on banger's development and CI
// machines, so there it is tested only through the SDK's client interface
// (a mock of its API operations that records the call sequence) and a fake
// jailer process; an end-to-end run needs such a KVM host.
//
// The VMM is started detached by banger itself (own session, not tied to a
// request context), replacing the SDK's start handler, which would kill the
// VMM when the start context ends. ForwardSignals is empty and non-nil so
// the SDK never relays a daemon's signals to running VMs.
package firecracker
