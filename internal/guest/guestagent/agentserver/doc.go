// Package agentserver is the guest's side of the guest agent: Server and
// its handlers (exec with process groups and ptys, file copy and port
// forwarding, port listing and watching, detached sessions, sync manifests
// with change tracking, freeze/thaw and reidentify hooks), served on a
// vsock listener (ListenVsock, Firecracker) or on a virtio-serial port
// (ServePort, QEMU: the guest half of the session handshake, then a yamux
// server). Only the guest binary (banger-vsock-agent) runs it; the host's
// tests start it to talk to a real server.
//
// Every request comes from the host, but paths and archives are still
// handled beneath the directory they name (os.Root, agentproto.ExtractTar).
// The protocol itself is described in package agentproto.
package agentserver
