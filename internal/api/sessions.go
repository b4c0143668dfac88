package api

import "time"

// Detached exec sessions: the guest agent keeps them running whatever
// becomes of the client (vm exec --detach, vm attach).
// MethodVMAttach joins a detached session: KindAttached, then the
// session's replayed and live output as KindStdout/KindStderr frames
// (KindLost when a slow client missed some); the client sends KindStdin,
// KindStdinEOF, KindSignal and KindResize as for vm.exec. The result comes
// once the process has exited; a client that closes the call only detaches.
var MethodVMAttach = Method[VMAttach, ExecResult]{Name: "vm.attach", Tracked: true}

// Data frame kinds of vm.attach.
const (
	KindAttached = "attached" // daemon → client: DetachedSession, before any output
	KindLost     = "lost"     // daemon → client: uint64, output bytes the replay ring dropped before this client read them
)

// VMAttach is vm.attach's params.
type VMAttach struct {
	Name    string `json:"name"`
	Session string `json:"session"`
	Stdin   bool   `json:"stdin,omitempty"` // the client streams stdin
	Rows    uint16 `json:"rows,omitempty"`  // the client's terminal size, for a tty session
	Cols    uint16 `json:"cols,omitempty"`
}

// SessionStarted is vm.exec's result with Detach.
type SessionStarted struct {
	ID  string `json:"id"`
	PID int    `json:"pid"`
}

// DetachedSession is a session the guest agent keeps (vm.sessions,
// KindAttached). It is the guest's word, checked for form by the daemon.
type DetachedSession struct {
	ID          string     `json:"id"`
	Command     []string   `json:"command"`
	TTY         bool       `json:"tty"`
	Stdin       bool       `json:"stdin"`
	PID         int        `json:"pid"`
	StartedAt   time.Time  `json:"started_at"`
	EndedAt     *time.Time `json:"ended_at,omitempty"`
	State       string     `json:"state"` // running or exited
	ExitCode    *int       `json:"exit_code,omitempty"`
	OutputBytes int64      `json:"output_bytes"`
	Clients     int        `json:"clients"`
}
