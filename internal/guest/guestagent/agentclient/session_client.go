package agentclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
)

// StartSession starts a process that the agent keeps running whatever
// becomes of this stream; it returns the session's id (req.ID, made here
// when empty).
func (c *Client) StartSession(ctx context.Context, req agentproto.SessionStart) (agentproto.SessionStarted, error) {
	if req.ID == "" {
		id, err := agentproto.NewSessionID(req.TTY)
		if err != nil {
			return agentproto.SessionStarted{}, err
		}
		req.ID = id
	}
	var res agentproto.SessionStarted
	if err := c.unary(ctx, agentproto.MethodSessionStart, req, &res); err != nil {
		return agentproto.SessionStarted{}, err
	}
	if res.ID != req.ID || res.PID <= 0 {
		return agentproto.SessionStarted{}, fmt.Errorf("%s: agent answered an invalid session (id %.40q, pid %d)", agentproto.MethodSessionStart, res.ID, res.PID)
	}
	return res, nil
}

// Sessions lists the agent's sessions, running and finished. The list is
// the guest's word: it is checked (ids, states, counts) before use.
func (c *Client) Sessions(ctx context.Context) ([]agentproto.SessionInfo, error) {
	var list []agentproto.SessionInfo
	if err := c.unary(ctx, agentproto.MethodSessionList, nil, &list); err != nil {
		return nil, err
	}
	if len(list) > agentproto.MaxSessions {
		return nil, fmt.Errorf("%s: agent listed %d sessions, more than the %d it may keep", agentproto.MethodSessionList, len(list), agentproto.MaxSessions)
	}
	for _, si := range list {
		if err := si.Validate(); err != nil {
			return nil, fmt.Errorf("%s: agent listed an invalid session: %w", agentproto.MethodSessionList, err)
		}
	}
	return list, nil
}

// AttachIO is what Attach relays: as for Exec, any field may be nil, but a
// nil Stdin sends nothing (the session's stdin stays open), and the end of
// a non-nil one (io.EOF, not another error) closes the session's stdin
// (pipes; a tty ignores it).
type AttachIO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Resize         <-chan agentproto.WinSize
	Signals        <-chan os.Signal
	// Attached is called once the agent has accepted the attach, before
	// any output (tty: whether the session has a terminal).
	Attached func(agentproto.SessionAttached)
	// Lost is called with the bytes of output that left the replay ring
	// before this client read them.
	Lost func(uint64)
}

// Attach joins session id: its buffered output is replayed, then live
// output follows until the process exits (its exit code is returned).
// Ending ctx only detaches: the process keeps running in the guest.
func (c *Client) Attach(ctx context.Context, id string, aio AttachIO) (int, error) {
	if !agentproto.ValidSessionID(id) {
		return -1, fmt.Errorf("%s: session id %q is not 16 hex digits", agentproto.MethodSessionAttach, id)
	}
	var res agentproto.SessionAttached
	st, err := c.call(ctx, agentproto.MethodSessionAttach, agentproto.SessionAttachParams{ID: id}, &res)
	if err != nil {
		return -1, err
	}
	if res.ID != id {
		abort(st)
		return -1, fmt.Errorf("%s: agent attached session %.40q, not %s", agentproto.MethodSessionAttach, res.ID, id)
	}
	if res.TTY != agentproto.SessionIDTTY(id) {
		// The mode is the host's (encoded in the id it chose): a guest
		// claiming a terminal would get raw bytes onto the user's.
		abort(st)
		return -1, fmt.Errorf("%s: agent claims session %s has tty=%t, but it was started with tty=%t", agentproto.MethodSessionAttach, id, res.TTY, !res.TTY)
	}
	if aio.Attached != nil {
		aio.Attached(res)
	}
	var sendIn func(*agentproto.Stream, <-chan struct{})
	if aio.Stdin != nil {
		sendIn = func(st *agentproto.Stream, finished <-chan struct{}) { sendAttachStdin(st, aio.Stdin, finished) }
	}
	return relayExec(ctx, st, "attach session "+id, sendIn, aio.Stdout, aio.Stderr, aio.Resize, aio.Signals, aio.Lost)
}

// sendAttachStdin streams stdin; only its real end (io.EOF) is passed on:
// a client that goes away detaches without closing the session's stdin.
func sendAttachStdin(st *agentproto.Stream, stdin io.Reader, finished <-chan struct{}) {
	buf := make([]byte, agentproto.ChunkSize)
	for {
		n, err := stdin.Read(buf)
		select {
		case <-finished:
			return
		default:
		}
		if n > 0 && st.WriteFrame(agentproto.FrameStdin, buf[:n]) != nil {
			return
		}
		if errors.Is(err, io.EOF) {
			_ = st.WriteFrame(agentproto.FrameEOF, nil)
		}
		if err != nil {
			return
		}
	}
}
