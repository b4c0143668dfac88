// Package agentclient is the host's side of the guest agent: Client (every
// method of the protocol, sessions, sync manifests, identity), and the
// dialers that open its streams: YamuxDialer over a QEMU virtio-serial
// chardev (with the host half of the session handshake), HybridVsockDialer
// and HybridVsockOver for Firecracker's hybrid vsock. The daemon, the CLI
// and the MCP server use it; the guest binary never does.
//
// Everything the guest sends is hostile: the client checks every answer
// (lengths, ids, states, manifest entries) before use and extracts
// archives with agentproto.ExtractTar. The protocol itself is described in
// package agentproto.
//
// The tests here run the client against a real agentserver.Server (over a
// unix socket and over yamux on a fake chardev) and against scripted
// hostile agents.
package agentclient
