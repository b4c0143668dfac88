package agentserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/hashicorp/yamux"
)

// OpenVirtioPort returns the open function for ServePort that opens the
// guest end of the named virtio-serial port.
func OpenVirtioPort(name string) func() (io.ReadWriteCloser, error) {
	path := "/dev/virtio-ports/" + name
	return func() (io.ReadWriteCloser, error) {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("open agent port: %w", err)
		}
		return f, nil
	}
}

// ServePort serves the agent on a byte channel shared with the host (a
// virtio-serial port): it opens it, runs ServeConn, and when the session
// ends (the host disconnected or reconnected) reopens it after a bounded
// backoff, until ctx ends. This is what the guest's init calls when there
// is no vsock: srv.ServePort(ctx, OpenVirtioPort(VirtioPortName)).
func (s *Server) ServePort(ctx context.Context, open func() (io.ReadWriteCloser, error)) error {
	var handlers sync.WaitGroup
	defer handlers.Wait()
	wait := agentproto.PortBackoffMin
	for ctx.Err() == nil {
		port, err := open()
		if err != nil {
			s.log.Debug("open agent channel", "err", err)
		} else {
			established, err := s.serveConn(ctx, port, &handlers)
			if established {
				wait = agentproto.PortBackoffMin
			}
			s.log.Debug("agent channel session ended", "err", err, "established", established)
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(wait*2, agentproto.PortBackoffMax)
	}
	return nil
}

// ServeConn runs one session on rwc: it waits for the host's handshake,
// then serves a yamux session (the guest accepts the streams) until it ends
// or ctx does (a host hanging up is a normal end: nil). rwc is closed on
// return. Reads that return EOF while the host is disconnected end the
// call; ServePort is the loop that reconnects.
func (s *Server) ServeConn(ctx context.Context, rwc io.ReadWriteCloser) error {
	var handlers sync.WaitGroup
	defer handlers.Wait()
	_, err := s.serveConn(ctx, rwc, &handlers)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// serveConn returns as soon as the session ends. Its handlers are told to
// stop (their ctx is cancelled) but not waited for: the caller waits on
// handlers. A handler slow to wind down (an exec in its kill grace, a
// forward whose TCP peer keeps its side open) must not keep the port
// closed, or every later handshake of a reconnecting host goes unanswered.
func (s *Server) serveConn(ctx context.Context, rwc io.ReadWriteCloser, handlers *sync.WaitGroup) (established bool, err error) {
	stop := context.AfterFunc(ctx, func() { _ = rwc.Close() })
	defer stop()
	defer rwc.Close()
	br := bufio.NewReaderSize(rwc, 64<<10)
	if err := guestHandshake(br, rwc); err != nil {
		return false, err
	}
	sess, err := yamux.Server(agentproto.BufferedRWC{Reader: br, RWC: rwc}, agentproto.YamuxConfig(s.log, false))
	if err != nil {
		return false, fmt.Errorf("start agent session: %w", err)
	}
	s.log.Info("agent session established")
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err = s.serve(sctx, sess, handlers)
	_ = sess.Close()
	if errors.Is(err, io.EOF) || errors.Is(err, yamux.ErrSessionShutdown) {
		return true, nil // the host hung up: a normal end
	}
	return true, err
}

// guestHandshake scans the channel for the host's HELLO (skipping any stale
// bytes), answers READY once per nonce, and returns after START. A host that
// says HELLO but never START (it died mid-way) makes the call fail after
// HandshakeTimeout, by closing rwc.
func guestHandshake(br *bufio.Reader, rwc io.ReadWriteCloser) error {
	nonce := ""
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			continue // garbage without newlines: keep scanning
		}
		if err != nil {
			return fmt.Errorf("wait for host handshake: %w", err)
		}
		if n, ok := agentproto.HandshakeField(line, agentproto.HelloPrefix); ok {
			if n == nonce {
				continue // a repeated HELLO; READY is already on its way
			}
			nonce = n
			if _, err := rwc.Write([]byte(agentproto.ReadyPrefix + nonce + "\n")); err != nil {
				return fmt.Errorf("answer host handshake: %w", err)
			}
			if timer == nil {
				timer = time.AfterFunc(agentproto.HandshakeTimeout, func() { _ = rwc.Close() })
			} else {
				timer.Reset(agentproto.HandshakeTimeout)
			}
			continue
		}
		if n, ok := agentproto.HandshakeField(line, agentproto.StartPrefix); ok && nonce != "" && n == nonce {
			return nil
		}
	}
}
