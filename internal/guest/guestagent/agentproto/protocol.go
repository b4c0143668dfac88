package agentproto

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// ProtocolVersion is sent in every request header; the server rejects others.
const ProtocolVersion = 1

// Method names.
const (
	MethodHealth     = "agent.health"
	MethodExec       = "exec"
	MethodPortsList  = "ports.list"
	MethodPortsWatch = "ports.watch"
	MethodCopyOut    = "fs.copy_out"
	MethodCopyIn     = "fs.copy_in"
	MethodForward    = "net.forward"
	MethodPoweroff   = "system.poweroff"
	MethodClockSet   = "system.clock_set"
)

// Frame types of the streaming methods (see doc.go).
const (
	FrameStdin    byte = 'i' // host → guest: bytes for the process's stdin
	FrameStdout   byte = 'o' // guest → host: process stdout (or the pty)
	FrameStderr   byte = 'e' // guest → host: process stderr
	FrameResize   byte = 'r' // host → guest: rows uint16, cols uint16 (big endian)
	FrameSignal   byte = 's' // host → guest: signal name ("INT", "TERM", …)
	FrameExit     byte = 'x' // guest → host: exit code int32 (big endian); last frame
	FrameEOF      byte = 'z' // end of stdin (exec) or of data (copy_in, copy_out)
	FrameData     byte = 'd' // tar bytes (copy_in, copy_out)
	FrameSnapshot byte = 'p' // guest → host: JSON []Port (ports.watch)
	FrameDone     byte = 'k' // guest → host: copy_in extracted everything
	FrameError    byte = '!' // JSON Error; last frame
)

const (
	maxHeaderLine = 1 << 20  // request and response lines
	maxFrame      = 1 << 20  // payload of one frame
	ChunkSize     = 32 << 10 // data is sent in frames of at most this size
	HeaderTimeout = 30 * time.Second
)

// Error codes carried by Error.
const (
	CodeBadRequest    = "bad_request"
	CodeUnknownMethod = "unknown_method"
	CodeNotFound      = "not_found"
	CodeExecFailed    = "exec_failed"
	CodeDialFailed    = "dial_failed"
	CodeUnsupported   = "unsupported"
	CodeIO            = "io"
	CodeInternal      = "internal"
)

// Error is an error reported by the agent; it survives the wire.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return "agent: " + e.Code + ": " + e.Message }

// Is lets errors.Is(err, &Error{Code: CodeNotFound}) match on the code alone.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Code == e.Code
}

// ErrConnectionLost reports a stream that ended before its method finished
// (the guest rebooted, the agent died, or the channel was reset).
var ErrConnectionLost = errors.New("agent connection lost")

// Errorf makes an *Error with code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Request is the first line the host writes on every stream.
type Request struct {
	V      int             `json:"v"`
	Method string          `json:"method"`
	OpID   string          `json:"op_id,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
}

// Response is the first line the guest writes back.
type Response struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// Health is the answer to agent.health.
type Health struct {
	BootID        string  `json:"boot_id"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	Version       string  `json:"version"`
	PID           int     `json:"pid"`
}

// ExecRequest describes a process to run in the guest.
type ExecRequest struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"` // K=V, added to (and overriding) the agent's environment
	Dir  string   `json:"dir,omitempty"`
	TTY  bool     `json:"tty,omitempty"`
	Rows uint16   `json:"rows,omitempty"`
	Cols uint16   `json:"cols,omitempty"`
}

// ExecStarted is the result line of exec.
type ExecStarted struct {
	PID int `json:"pid"`
}

// WinSize is a terminal size.
type WinSize struct {
	Rows, Cols uint16
}

// Port is a listening socket in the guest.
type Port struct {
	Proto   string   `json:"proto"` // tcp, tcp6, udp, udp6
	Address string   `json:"address"`
	Port    int      `json:"port"`
	Inode   uint64   `json:"inode"`
	PID     int      `json:"pid,omitempty"`
	Command string   `json:"command,omitempty"` // /proc/PID/comm
	Cmdline []string `json:"cmdline,omitempty"`
}

// ClockSet is system.clock_set's request: the host's wall clock, which the
// guest steps to (after a resume its clock is as old as the suspend).
type ClockSet struct {
	UnixNano int64 `json:"unix_nano"`
}

// CopyOutParams are fs.copy_out's parameters.
type CopyOutParams struct {
	Path string `json:"path"`
}

// CopyInParams are fs.copy_in's parameters.
type CopyInParams struct {
	Dir  string `json:"dir"`
	Name string `json:"name"` // the archive's one top-level name (see ExtractTar)
}

// ForwardParams are net.forward's parameters.
type ForwardParams struct {
	Addr string `json:"addr"`
}

// Stream is one request's connection with its buffered reader: after the
// header line, reads must go through r so no buffered byte is lost.
type Stream struct {
	net.Conn
	R  *bufio.Reader
	mu sync.Mutex // serialises frame writes
}

// NewStream wraps one request's connection.
func NewStream(c net.Conn) *Stream {
	return &Stream{Conn: c, R: bufio.NewReaderSize(c, 64<<10)}
}

func (s *Stream) Read(p []byte) (int, error) { return s.R.Read(p) }

// CloseWrite half-closes the stream where the transport allows it.
func (s *Stream) CloseWrite() error { return CloseWrite(s.Conn) }

// CloseWrite half-closes c: unix, TCP and vsock conns have CloseWrite; a
// yamux stream's Close is itself a half-close (reads go on until the peer's FIN).
func CloseWrite(c net.Conn) error {
	switch v := c.(type) {
	case interface{ CloseWrite() error }:
		return v.CloseWrite()
	case *yamux.Stream:
		return v.Close()
	}
	return c.Close()
}

// WriteLine writes v as one JSON line (a request or response header).
func (s *Stream) WriteLine(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode line: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err = s.Conn.Write(append(b, '\n'))
	return err
}

// ReadLine reads one JSON header line, at most maxHeaderLine bytes, into v.
func (s *Stream) ReadLine(v any) error {
	line, err := readLine(s.R, maxHeaderLine)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("decode line: %w", err)
	}
	return nil
}

// ReadLine reads one '\n'-terminated line of at most max bytes.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > max {
			return nil, fmt.Errorf("line longer than %d bytes", max)
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// WriteFrame writes [type][len uint32 BE][payload] in one Write.
func (s *Stream) WriteFrame(t byte, payload []byte) error {
	buf := make([]byte, 5+len(payload))
	buf[0] = t
	binary.BigEndian.PutUint32(buf[1:5], uint32(len(payload)))
	copy(buf[5:], payload)
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.Conn.Write(buf)
	return err
}

// WriteJSONFrame writes v as the JSON payload of one frame of type t.
func (s *Stream) WriteJSONFrame(t byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	return s.WriteFrame(t, b)
}

// ReadFrame reads one frame: its type and payload (at most maxFrame bytes).
func (s *Stream) ReadFrame() (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(s.R, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, ErrConnectionLost
		}
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("frame of %d bytes exceeds %d", n, maxFrame)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(s.R, p); err != nil {
		return 0, nil, fmt.Errorf("read frame payload: %w", err)
	}
	return hdr[0], p, nil
}

// FrameWriter turns writes into frames of type t, chunked.
type FrameWriter struct {
	S *Stream
	T byte
}

func (w FrameWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), ChunkSize)
		if err := w.S.WriteFrame(w.T, p[:n]); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// DecodeErrorFrame decodes an '!' frame's payload into a tamed *Error.
func DecodeErrorFrame(p []byte) error {
	var e Error
	if err := json.Unmarshal(p, &e); err != nil || e.Code == "" {
		return Errorf(CodeInternal, "undecodable error frame of %d bytes", len(p))
	}
	return Tame(&e)
}
