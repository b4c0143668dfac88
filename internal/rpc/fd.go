package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/progress"
)

// KindFile is the data frame that carries one open file descriptor: the
// frame's own bytes carry it as SCM_RIGHTS. The descriptor rides on the JSON
// line itself, so the client has received it by the time it has read the
// frame, however far its buffered decoder reads ahead; no extra handshake
// or byte outside the JSON stream is needed.
const KindFile = "fd"

// maxPassedFiles bounds the descriptors one read accepts; the kernel closes
// any beyond the buffer, and the read reports the truncation.
const maxPassedFiles = 4

// SendFile passes f to the client (a KindFile data frame) before the
// handler's result; the client takes it with InvokeWithFile. f stays open
// here: the caller closes its own copy once SendFile returns.
func (c *Call) SendFile(f *os.File) error {
	if c.conn == nil {
		return errors.New("send file: the connection is not a unix socket")
	}
	line, err := json.Marshal(Frame{Type: FrameData, OpID: c.OpID, Kind: KindFile})
	if err != nil {
		return fmt.Errorf("encode %s frame: %w", KindFile, err)
	}
	line = append(line, '\n')
	raw, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("send file %s: %w", f.Name(), err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var n, oobn int
	var werr error
	// Control keeps f's descriptor valid while the kernel takes its reference.
	if err := raw.Control(func(fd uintptr) {
		oob := unix.UnixRights(int(fd))
		n, oobn, werr = c.conn.WriteMsgUnix(line, oob, nil)
		if werr == nil && oobn != len(oob) {
			werr = fmt.Errorf("sent %d of %d control bytes", oobn, len(oob))
		}
	}); err != nil {
		return fmt.Errorf("send file %s: %w", f.Name(), err)
	}
	if werr != nil {
		return fmt.Errorf("send file %s: %w", f.Name(), werr)
	}
	// A stream socket may take part of the line; the descriptor went with
	// its first bytes, the rest is plain data.
	if n < len(line) {
		if _, err := c.conn.Write(line[n:]); err != nil {
			return fmt.Errorf("send file %s: %w", f.Name(), err)
		}
	}
	return nil
}

// callWithFile is CallRaw for a method whose handler passes one open file
// with SendFile before its result. It returns that file, which the caller
// owns and must close; on any error no descriptor is left open.
func (c *Client) callWithFile(ctx context.Context, method string, params, result any, opts ...CallOptions) (*os.File, error) {
	s, err := c.open(ctx, method, params, true)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if s.files == nil {
		return nil, fmt.Errorf("%s: socket %s is not a unix socket: cannot receive a file", method, c.Socket)
	}
	var onEvent func(progress.Event)
	if len(opts) > 0 {
		onEvent = opts[0].OnEvent
	}
	var file *os.File
	fail := func(err error) (*os.File, error) {
		if file != nil {
			file.Close()
		}
		return nil, err
	}
	for {
		f, err := s.Next()
		if err != nil {
			return fail(err)
		}
		switch f.Type {
		case FrameEvent:
			if onEvent != nil && f.Event != nil {
				onEvent(*f.Event)
			}
		case FrameData:
			if f.Kind != KindFile {
				continue
			}
			fd, ok := s.files.take()
			if !ok {
				return fail(fmt.Errorf("%s: file frame arrived without a descriptor: %w", method, s.files.error()))
			}
			if file != nil {
				unix.Close(fd)
				return fail(fmt.Errorf("%s: the server passed more than one file", method))
			}
			file = os.NewFile(uintptr(fd), method)
		case FrameResult:
			if file == nil {
				return fail(fmt.Errorf("%s: the result came without the file", method))
			}
			if result != nil && len(f.Result) > 0 {
				if err := json.Unmarshal(f.Result, result); err != nil {
					return fail(fmt.Errorf("decode %s result: %w", method, err))
				}
			}
			return file, nil
		}
	}
}

// fileReader reads a unix stream with recvmsg so descriptors passed with
// the data are kept (a plain read would make the kernel drop them), in
// arrival order, until taken or closed.
type fileReader struct {
	conn *net.UnixConn
	oob  []byte

	mu    sync.Mutex
	fds   []int
	trunc bool // descriptors were lost for want of control buffer space
}

func newFileReader(conn *net.UnixConn) *fileReader {
	return &fileReader{conn: conn, oob: make([]byte, unix.CmsgSpace(4*maxPassedFiles))}
}

func (r *fileReader) Read(p []byte) (int, error) {
	// ReadMsgUnix receives descriptors close-on-exec (MSG_CMSG_CLOEXEC).
	n, oobn, flags, _, err := r.conn.ReadMsgUnix(p, r.oob)
	if oobn > 0 {
		r.keep(r.oob[:oobn])
	}
	if flags&unix.MSG_CTRUNC != 0 {
		r.mu.Lock()
		r.trunc = true
		r.mu.Unlock()
	}
	if n == 0 && err == nil && len(p) > 0 {
		return 0, io.EOF // recvmsg reports a closed stream as 0 bytes
	}
	return n, err
}

func (r *fileReader) keep(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.trunc = true
		return
	}
	for i := range msgs {
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue // not SCM_RIGHTS (credentials): nothing to close
		}
		r.fds = append(r.fds, fds...)
	}
}

// take returns the oldest received descriptor not yet taken.
func (r *fileReader) take() (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.fds) == 0 {
		return -1, false
	}
	fd := r.fds[0]
	r.fds = r.fds[1:]
	return fd, true
}

func (r *fileReader) error() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.trunc {
		return errors.New("descriptors were truncated in transit")
	}
	return errors.New("none received")
}

// closeUntaken closes descriptors nobody took.
func (r *fileReader) closeUntaken() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, fd := range r.fds {
		unix.Close(fd)
	}
	r.fds = nil
}
