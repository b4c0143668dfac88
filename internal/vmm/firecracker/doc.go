// Package firecracker drives Firecracker microVMs through firecracker-go-sdk
// v1.0.0, always under the jailer (chroot, per-VM uid/gid, cgroups).
//
// It needs a KVM host that can run a standard kernel (not PVM) with the
// firecracker and jailer binaries installed (root-owned), and an
// uncompressed ELF vmlinux with virtio built in. Neither exists on banger's
// development and CI machines, so there it is tested through the SDK's
// client interface (a mock of its API operations that records the call
// sequence) with a fake jailer process, and through the root helper's real
// vm.jailer.* methods with a fake jailer binary (the SDK's HTTP client over
// the socket the helper passes); an end-to-end run needs such a KVM host.
//
// A Launcher starts the jailer, replacing the SDK's start handler (which
// would kill the VMM when the start context ends): the owner daemon's is
// the root helper (HelperLauncher), which builds the jail, runs the jailer
// as root and hands back the API socket, so the daemon never opens the
// jail; DirectLauncher runs it from this process (root only). Either way
// the VMM is detached (own session, not tied to a request context).
// ForwardSignals is empty and non-nil so the SDK never relays a daemon's
// signals to running VMs.
package firecracker
