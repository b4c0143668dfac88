package agentproto

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Methods of exec sessions that outlive their client (see doc.go,
// "Sessions"). The agent owns them: a host that goes away, or a daemon
// that restarts, finds them still running.
const (
	MethodSessionStart  = "session.start"
	MethodSessionAttach = "session.attach"
	MethodSessionList   = "session.list"
)

// FrameLost (guest → host, session.attach): uint64 BE, output bytes that
// left the replay ring before this client read them.
const FrameLost byte = 'l'

const (
	// DefaultReplayBytes is how much output a session keeps for replay
	// when the host asks for none in particular.
	DefaultReplayBytes = 1 << 20
	// MaxReplayBytes caps a session's replay ring: it lives in guest memory.
	MaxReplayBytes = 16 << 20
	// MaxSessions bounds the sessions an agent keeps, running or finished;
	// the oldest finished one makes room for a new one.
	MaxSessions = 32
	// MaxSessionClients bounds the clients attached to one session.
	MaxSessionClients = 4
	// maxListArgv bounds the argv entries a listed session may carry.
	maxListArgv = 4096
)

// Session states.
const (
	SessionRunning = "running"
	SessionExited  = "exited"
)

var sessionIDRe = regexp.MustCompile(`^[0-9a-f]{16}$`)

// ValidSessionID reports whether id has the form the agent hands out
// (16 lower-case hex digits).
func ValidSessionID(id string) bool { return sessionIDRe.MatchString(id) }

// NewSessionID makes a session id for the host to hand to session.start.
// Its last hex digit is odd exactly when the session has a tty: the host
// reads a session's mode from the id it chose, never from the guest's
// word, so a guest cannot turn a pipes session into raw terminal output.
func NewSessionID(tty bool) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("make session id: %w", err)
	}
	b[7] &^= 1
	if tty {
		b[7] |= 1
	}
	return hex.EncodeToString(b[:]), nil
}

// SessionIDTTY reports the mode encoded in a valid session id.
func SessionIDTTY(id string) bool {
	return len(id) == 16 && strings.IndexByte("13579bdf", id[15]) >= 0
}

// SessionStart is session.start's request: a process the agent keeps
// running, whatever becomes of the host's stream.
type SessionStart struct {
	ExecRequest
	// ID is the host's id for the session (see NewSessionID); empty, the
	// agent makes one. It must match TTY and not be in use.
	ID string `json:"id,omitempty"`
	// Stdin keeps the process's stdin open for attached clients; without
	// it (and without a tty) the process starts with its stdin at EOF.
	Stdin bool `json:"stdin,omitempty"`
	// ReplayBytes is the output kept for replay (0: DefaultReplayBytes;
	// at most MaxReplayBytes).
	ReplayBytes int `json:"replay_bytes,omitempty"`
}

// SessionStarted is session.start's result.
type SessionStarted struct {
	ID  string `json:"id"`
	PID int    `json:"pid"`
}

// SessionInfo describes one session (session.list).
type SessionInfo struct {
	ID          string     `json:"id"`
	Argv        []string   `json:"argv"`
	TTY         bool       `json:"tty,omitempty"`
	Stdin       bool       `json:"stdin,omitempty"`
	PID         int        `json:"pid"`
	StartedAt   time.Time  `json:"started_at"`
	EndedAt     *time.Time `json:"ended_at,omitempty"`
	State       string     `json:"state"`
	ExitCode    *int       `json:"exit_code,omitempty"`
	OutputBytes int64      `json:"output_bytes"` // written in all, replayable or not
	Clients     int        `json:"clients"`
}

// Validate checks a SessionInfo that came from a (hostile) guest.
func (si SessionInfo) Validate() error {
	switch {
	case !ValidSessionID(si.ID):
		return fmt.Errorf("session id %.40q is not 16 hex digits", si.ID)
	case si.TTY != SessionIDTTY(si.ID):
		return fmt.Errorf("session %s: its tty flag does not match its id", si.ID)
	case len(si.Argv) == 0 || len(si.Argv) > maxListArgv:
		return fmt.Errorf("session %s: %d argv entries", si.ID, len(si.Argv))
	case si.State == SessionRunning && si.ExitCode != nil:
		return fmt.Errorf("session %s: running with an exit code", si.ID)
	case si.State == SessionExited && si.ExitCode == nil:
		return fmt.Errorf("session %s: exited without an exit code", si.ID)
	case si.State != SessionRunning && si.State != SessionExited:
		return fmt.Errorf("session %s: unknown state %.20q", si.ID, si.State)
	case si.PID < 0 || si.OutputBytes < 0 || si.Clients < 0 || si.Clients > MaxSessionClients:
		return fmt.Errorf("session %s: negative or impossible counters", si.ID)
	}
	return nil
}

// SessionAttachParams are session.attach's parameters.
type SessionAttachParams struct {
	ID string `json:"id"`
}

// SessionAttached is session.attach's result line; output frames follow.
type SessionAttached struct {
	ID  string `json:"id"`
	TTY bool   `json:"tty,omitempty"`
}
