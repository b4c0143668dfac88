package rpc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/progress"
)

// ErrNotRunning means nothing listens on the socket (absent, or stale).
var ErrNotRunning = errors.New("not running")

// Client calls a Server over its unix socket. It is safe for concurrent use:
// every call opens its own connection.
type Client struct {
	Socket string
}

// NewClient returns a client for the socket at path.
func NewClient(socket string) *Client { return &Client{Socket: socket} }

// CallOptions tune one call.
type CallOptions struct {
	OnEvent func(progress.Event)
}

// CallRaw sends method with params and decodes the result into result
// (which may be nil). The op_id comes from ctx (WithOpID) or is made here;
// it is on the returned *api.Error as well. Code calls through a method
// descriptor (Invoke); CallRaw is for tests and tools that must send what
// no descriptor allows (hostile params, unknown names).
func (c *Client) CallRaw(ctx context.Context, method string, params, result any, opts ...CallOptions) error {
	s, err := c.OpenRaw(ctx, method, params)
	if err != nil {
		return err
	}
	defer s.Close()
	var o CallOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	for {
		f, err := s.Next()
		if err != nil {
			return err
		}
		switch f.Type {
		case FrameEvent:
			if o.OnEvent != nil && f.Event != nil {
				o.OnEvent(*f.Event)
			}
		case FrameResult:
			if result != nil && len(f.Result) > 0 {
				if err := json.Unmarshal(f.Result, result); err != nil {
					return fmt.Errorf("decode %s result: %w", method, err)
				}
			}
			return nil
		}
	}
}

// Stream is the client side of one call, for methods that exchange data
// frames (exec, logs -f).
type Stream struct {
	OpID   string
	method string
	conn   net.Conn
	dec    *json.Decoder
	mu     sync.Mutex
	enc    *json.Encoder
	stop   func() bool
	files  *fileReader // non-nil: descriptors passed with the frames are kept
}

// OpenRaw sends the request and returns the stream; the caller reads
// frames with Next until a result or error, and may Send data frames
// meanwhile. Code opens streams through a descriptor (OpenStream).
func (c *Client) OpenRaw(ctx context.Context, method string, params any) (*Stream, error) {
	return c.open(ctx, method, params, false)
}

// open is OpenRaw; withFiles keeps the descriptors the server passes (SendFile).
func (c *Client) open(ctx context.Context, method string, params any, withFiles bool) (*Stream, error) {
	opID := OpIDFrom(ctx)
	if opID == "" {
		opID = NewOpID()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("connect to %s: %w", c.Socket, ErrNotRunning)
		}
		if errors.Is(err, syscall.EACCES) {
			return nil, &api.Error{Code: api.CodePermissionDenied, Message: fmt.Sprintf("connect to %s: permission denied (the socket belongs to another user)", c.Socket), OpID: opID}
		}
		return nil, fmt.Errorf("connect to %s: %w", c.Socket, err)
	}
	var raw json.RawMessage
	if params != nil {
		if raw, err = json.Marshal(params); err != nil {
			conn.Close()
			return nil, fmt.Errorf("encode %s params: %w", method, err)
		}
	}
	var src io.Reader = conn
	var files *fileReader
	if uc, ok := conn.(*net.UnixConn); ok && withFiles {
		files = newFileReader(uc)
		src = files
	}
	s := &Stream{OpID: opID, method: method, conn: conn, files: files,
		dec: json.NewDecoder(bufio.NewReaderSize(src, 64<<10)), enc: json.NewEncoder(conn)}
	s.stop = context.AfterFunc(ctx, func() { conn.Close() })
	if err := s.enc.Encode(Request{V: api.Version, Method: method, OpID: opID, Params: raw}); err != nil {
		// A server that refuses us (peer credentials) answers and hangs up
		// before reading: its error frame says why, better than EPIPE.
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		if _, ferr := s.Next(); ferr != nil {
			var ae *api.Error
			if errors.As(ferr, &ae) && ae.Code != api.CodeUnavailable {
				s.Close()
				return nil, ae
			}
		}
		s.Close()
		return nil, fmt.Errorf("send %s request: %w", method, err)
	}
	return s, nil
}

// Next returns the next frame. A result frame is returned as is; an error
// frame is returned as its *api.Error.
func (s *Stream) Next() (Frame, error) {
	var f Frame
	if err := s.dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
			return Frame{}, &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("%s: connection closed before a result", s.method), OpID: s.OpID}
		}
		return Frame{}, fmt.Errorf("read %s response: %w", s.method, err)
	}
	if f.Type == FrameError {
		if f.Error == nil {
			f.Error = &api.Error{Code: api.CodeInternal, Message: "error frame without error"}
		}
		if f.Error.OpID == "" {
			f.Error.OpID = s.OpID
		}
		return f, f.Error
	}
	return f, nil
}

// Send writes a data frame to the server.
func (s *Stream) Send(kind string, payload any) error {
	raw, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.enc.Encode(Frame{Type: FrameData, Kind: kind, Payload: raw})
}

// CloseSend tells the server no more data frames follow: its Recv sees
// io.EOF. (Closing the connection instead would cancel the call.)
func (s *Stream) CloseSend() error { return s.Send(KindEOF, nil) }

// Close ends the call.
func (s *Stream) Close() error {
	s.stop()
	err := s.conn.Close()
	if s.files != nil {
		s.files.closeUntaken()
	}
	return err
}
