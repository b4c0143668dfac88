// Package agentproto is banger's guest agent protocol, shared by both
// sides: the wire format (header lines, frames, errors and their codes),
// method names with their request and response types, the session and
// sync types and checks, and the safe tar writer and extractor used by
// vm cp and vm sync on either side. The guest's server is package
// agentserver (imported only by the guest binary), the host's client
// package agentclient (daemon, CLI, MCP server); neither imports the other.
//
// # Transports
//
// Every request travels on its own stream (a net.Conn); a Dialer opens one.
//
//   - vsock (Firecracker): the guest serves agentserver.ListenVsock(DefaultVsockPort)
//     with agentserver.Server.Serve. The host uses agentclient.HybridVsockDialer: it connects to
//     Firecracker's unix socket, writes "CONNECT <port>\n" and reads
//     "OK <hostport>\n"; the connection is then the stream.
//   - virtio-serial (QEMU; needs no /dev/vhost-vsock): one port, named
//     VirtioPortName, whose host side is a unix socket chardev
//     (-chardev socket,id=agent,path=SOCK,server=on,wait=off
//     -device virtserialport,chardev=agent,name=banger.agent). The single
//     byte stream carries a yamux session: the guest is the yamux server,
//     the host (agentclient.NewYamuxDialer) the client, one yamux stream per request.
//     The guest's init calls
//     srv.ServePort(ctx, agentserver.OpenVirtioPort(agentproto.VirtioPortName)).
//   - unix socket: agentserver.Server.Serve on a unix listener, used by tests.
//
// # Session handshake (virtio-serial only)
//
// The host may disconnect and reconnect at any time (the daemon restarts;
// QEMU's chardev accepts one client at a time), and the channel may still
// hold bytes of a dead session. So a session starts with
//
//	host → guest  BANGER-AGENT-HELLO 1 <nonce>\n   repeated every 250 ms
//	guest → host  BANGER-AGENT-READY 1 <nonce>\n   once per nonce
//	host → guest  BANGER-AGENT-START 1 <nonce>\n
//
// and yamux begins right after START. Both sides skip anything before the
// line they wait for. A guest still running a stale session reads the new
// HELLO as a yamux protocol error, drops the session and finds the next
// HELLO. While the host is away virtio-serial reads return EOF: ServePort
// (agentserver) reopens the port with a backoff of 50 ms doubling to 500 ms, never
// spinning. QEMU holds the host's bytes while the guest's port is closed
// and delivers them in one burst once it opens, so a host that connected
// early is answered as soon as the guest serves. When a session ends its
// handlers are cancelled but not waited for before the port is reopened:
// a busy handler (an exec in its kill grace, a forward to an idle TCP
// peer) must not keep the next host out. The host closes a session whose guest stops answering
// (keepalive, stream-open timeout) and agentclient.YamuxDialer makes a new one on the
// next Dial.
//
// # Requests
//
// On each stream the host writes one JSON line,
//
//	{"v":1,"method":"exec","op_id":"op-…","params":{…}}
//
// and the guest answers one JSON line, {"result":…} or
// {"error":{"code":"not_found","message":"…"}} (a *Error on the client; the
// Code* constants name the codes). Unary methods end there:
// agent.health (Health), ports.list ([]Port), system.poweroff (the guest
// then calls agentserver.ServerOptions.Poweroff), system.clock_set (ClockSet: the guest
// steps its wall clock, after a resume; times outside 2020..2200 refused).
//
// Streaming methods continue with frames: [type byte][length uint32 big
// endian][payload], payload at most 1 MiB.
//
//	exec         host: 'i' stdin bytes, 'z' end of stdin, 'r' resize
//	             (rows, cols: uint16 BE), 's' signal name ("INT", "TERM",
//	             "KILL", "HUP", "QUIT", "USR1", "USR2").
//	             guest: 'o' stdout (all output with a tty), 'e' stderr,
//	             then 'x' exit code (int32 BE, 128+N when killed by signal N)
//	             or '!' error (JSON Error) as the last frame.
//	ports.watch  guest: 'p' JSON []Port, a full snapshot first and on every
//	             change (polled every 500 ms) until the host closes.
//	fs.copy_out  guest: 'd' tar bytes…, then 'z', or '!'.
//	fs.copy_in   params {"dir","name"}; host: 'd' tar bytes…, then 'z'
//	             (or '!' to abort). guest: 'k' once all is extracted, or '!'.
//
//	fs.manifest  params ManifestRequest {"dir","paths","max_entries",
//	             "track","since"}; result ManifestReply {"token",
//	             "unchanged"}. guest: 'm' JSON []ManifestEntry batches,
//	             then 'z', or '!'. The whole tree under dir (lstat, never
//	             followed), or only paths, each file then with its sha256.
//	             With track the tree is watched (agentserver's sync_track.go) and the
//	             reply holds a token; since=token is answered unchanged,
//	             with no batches, while nothing changed.
//	fs.remove    unary, params {"dir","paths"}: RemoveAll of each path
//	             beneath dir through an os.Root (links removed, not
//	             followed).
//
// vm sync uploads with fs.copy_in and the name ".". The client checks
// every manifest entry (CheckRelPath, type, size, hash, link length) and
// the entry count, and refuses the whole manifest otherwise.
//
// Archives are extracted with ExtractTar on either side, the host's
// (copy_out: the guest is hostile) like the guest's: only the one name
// asked for and what is beneath it, never through a symlink, no devices
// or fifos, no set-uid/set-gid/sticky bits, existing directories' modes
// kept, bounded by CopyLimits; a refused archive is undone.
//
// net.forward is not framed: after the response line the stream carries the
// TCP connection's bytes both ways, and a half-close on either side is
// passed on (on yamux, a stream's Close is the half-close).
//
// # Sessions
//
// A session is an exec the agent owns: it keeps running whatever becomes
// of the host's streams, and its output goes into a bounded replay ring
// (package sessionstream) instead of a stream (agentserver's session_server.go).
//
//	session.start   params SessionStart (an ExecRequest, the host's id,
//	                stdin kept open or not, replay_bytes ≤ MaxReplayBytes);
//	                result SessionStarted {id, pid}. An id is 16 hex digits,
//	                the last odd exactly for a tty session (NewSessionID):
//	                the host reads the mode from the id it chose. At most
//	                MaxSessions are kept; the oldest finished one makes room.
//	session.list    result []SessionInfo (state running or exited, exit code).
//	session.attach  params {"id"}; result SessionAttached, then exec's
//	                frames both ways: the ring is replayed, live output
//	                follows, 'x' once the process has exited. 'l' (uint64
//	                BE) counts bytes a slow client lost to the ring. A host
//	                that closes the stream only detaches: no signal is sent.
//	                At most 4 clients per session; 'z' closes a pipe stdin
//	                and is ignored on a tty.
//
// The host checks every id, state, count and tty flag in these answers
// before use.
//
// # Processes
//
// An exec'd process gets its own process group (a session with a
// controlling pty when tty is set); signals go to that group, or on a pty
// to its foreground group. If the host's stream dies before the process
// exits, the group gets SIGHUP and, after agentserver.ServerOptions.KillGrace, SIGKILL.
// The process's environment is the agent's plus the request's K=V entries.
package agentproto
