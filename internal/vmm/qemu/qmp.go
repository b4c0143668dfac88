package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// defaultQMPTimeout bounds one QMP exchange when ctx has no deadline.
const defaultQMPTimeout = 10 * time.Second

// QMP is a minimal client for QEMU's machine protocol: the greeting, then
// qmp_capabilities, then one command at a time; asynchronous events that
// arrive between replies are kept in Events. QEMU serves one QMP client at a
// time, so callers dial per operation and Close promptly.
type QMP struct {
	conn   *net.UnixConn
	r      *bufio.Reader
	nextID int
	Events []Event
}

// Event is an asynchronous QMP event, e.g. SHUTDOWN or RESUME.
type Event struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data"`
}

// QMPError is an error reply from QEMU.
type QMPError struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *QMPError       `json:"error"`
	Event  string          `json:"event"`
	Data   json.RawMessage `json:"data"`
	ID     *int            `json:"id"`
}

// DialQMP connects to the QMP socket at path and negotiates capabilities.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect qmp %s: %w", path, err)
	}
	q := &QMP{conn: c.(*net.UnixConn), r: bufio.NewReader(c)}
	q.setDeadline(ctx)
	msg, err := q.read()
	if err != nil {
		q.Close()
		return nil, fmt.Errorf("read qmp greeting from %s: %w", path, err)
	}
	if msg.QMP == nil {
		q.Close()
		return nil, fmt.Errorf("qmp %s: unexpected greeting", path)
	}
	if err := q.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

// Close ends the session.
func (q *QMP) Close() error { return q.conn.Close() }

func (q *QMP) setDeadline(ctx context.Context) {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(defaultQMPTimeout)
	}
	_ = q.conn.SetDeadline(dl)
}

func (q *QMP) read() (qmpMessage, error) {
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return qmpMessage{}, err
		}
		var m qmpMessage
		if err := json.Unmarshal(line, &m); err != nil {
			return qmpMessage{}, fmt.Errorf("decode qmp message %q: %w", line, err)
		}
		if m.Event != "" {
			q.Events = append(q.Events, Event{Name: m.Event, Data: m.Data})
			continue
		}
		return m, nil
	}
}

// Execute runs one command; out (if not nil) receives the "return" value.
func (q *QMP) Execute(ctx context.Context, cmd string, args, out any) error {
	return q.execute(ctx, cmd, args, out, nil)
}

// ExecuteWithFD runs one command while passing fd over the socket
// (SCM_RIGHTS), as getfd wants.
func (q *QMP) ExecuteWithFD(ctx context.Context, cmd string, args any, f *os.File) error {
	return q.execute(ctx, cmd, args, nil, unix.UnixRights(int(f.Fd())))
}

func (q *QMP) execute(ctx context.Context, cmd string, args, out any, oob []byte) error {
	q.setDeadline(ctx)
	q.nextID++
	id := q.nextID
	req := map[string]any{"execute": cmd, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode qmp %s: %w", cmd, err)
	}
	if _, _, err := q.conn.WriteMsgUnix(append(b, '\n'), oob, nil); err != nil {
		return fmt.Errorf("send qmp %s: %w", cmd, err)
	}
	for {
		m, err := q.read()
		if err != nil {
			return fmt.Errorf("read qmp %s reply: %w", cmd, err)
		}
		if m.ID != nil && *m.ID != id {
			continue // a stale reply
		}
		if m.Error != nil {
			m.Error.Command = cmd
			return m.Error
		}
		if out != nil && m.Return != nil {
			if err := json.Unmarshal(m.Return, out); err != nil {
				return fmt.Errorf("decode qmp %s reply: %w", cmd, err)
			}
		}
		return nil
	}
}

// Status is query-status's answer.
type Status struct {
	Running bool   `json:"running"`
	Status  string `json:"status"` // "running", "paused", "prelaunch", "inmigrate", "postmigrate", "shutdown"...
}

// QueryStatus asks QEMU for the VM's run state.
func (q *QMP) QueryStatus(ctx context.Context) (Status, error) {
	var s Status
	err := q.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// Quit asks QEMU to exit at once. QEMU may close the socket before or right
// after its reply; both mean it got the command.
func (q *QMP) Quit(ctx context.Context) error {
	err := q.Execute(ctx, "quit", nil, nil)
	if err != nil && isClosed(err) {
		return nil
	}
	return err
}

func isClosed(err error) bool {
	var qe *QMPError
	if errors.As(err, &qe) {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE)
}
