package agentserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
)

const forwardDialTimeout = 5 * time.Second

func (s *Server) handleCopyOut(ctx context.Context, st *agentproto.Stream, _ *slog.Logger, raw json.RawMessage) error {
	var p agentproto.CopyOutParams
	if err := decodeParams(raw, &p); err != nil {
		return fail(st, err)
	}
	if !filepath.IsAbs(p.Path) {
		return fail(st, agentproto.Errorf(agentproto.CodeBadRequest, "copy_out path %q is not absolute", p.Path))
	}
	if _, err := os.Lstat(p.Path); err != nil {
		return fail(st, fmt.Errorf("copy out %s: %w", p.Path, err))
	}
	if err := Respond(st, struct{}{}); err != nil {
		return err
	}
	if err := agentproto.WriteTar(ctx, agentproto.FrameWriter{S: st, T: agentproto.FrameData}, p.Path); err != nil {
		return failFrame(st, err)
	}
	return st.WriteFrame(agentproto.FrameEOF, nil)
}

func (s *Server) handleCopyIn(ctx context.Context, st *agentproto.Stream, _ *slog.Logger, raw json.RawMessage) error {
	var p agentproto.CopyInParams
	if err := decodeParams(raw, &p); err != nil {
		return fail(st, err)
	}
	if !filepath.IsAbs(p.Dir) {
		return fail(st, agentproto.Errorf(agentproto.CodeBadRequest, "copy_in directory %q is not absolute", p.Dir))
	}
	if err := agentproto.CheckBase(p.Name); err != nil {
		return fail(st, agentproto.Errorf(agentproto.CodeBadRequest, "copy_in: %v", err))
	}
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return fail(st, fmt.Errorf("create %s: %w", p.Dir, err))
	}
	if err := Respond(st, struct{}{}); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			t, payload, err := st.ReadFrame()
			if err != nil {
				pw.CloseWithError(fmt.Errorf("read archive from host: %w", agentproto.ErrConnectionLost))
				return
			}
			switch t {
			case agentproto.FrameData:
				if _, err := pw.Write(payload); err != nil {
					return // extraction gave up; its error is reported
				}
			case agentproto.FrameEOF:
				_ = pw.Close()
				return
			case agentproto.FrameError:
				pw.CloseWithError(agentproto.DecodeErrorFrame(payload))
				return
			}
		}
	}()
	err := agentproto.ExtractTar(ctx, pr, p.Dir, p.Name, s.opts.CopyLimits)
	if err == nil {
		// Consume the archive's trailing padding up to the host's EOF frame.
		_, err = io.Copy(io.Discard, pr)
	}
	pr.CloseWithError(errors.New("extraction finished"))
	if err != nil {
		_ = failFrame(st, err)
		_ = st.Close()
		<-readDone
		return err
	}
	<-readDone
	return st.WriteFrame(agentproto.FrameDone, nil)
}

// forwardAddr accepts "host:port", ":port" or "port"; the host defaults to
// the guest's loopback.
func forwardAddr(addr string) (string, error) {
	if _, err := strconv.ParseUint(addr, 10, 16); err == nil {
		addr = ":" + addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", agentproto.Errorf(agentproto.CodeBadRequest, "forward address %q: %v", addr, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", agentproto.Errorf(agentproto.CodeBadRequest, "forward port %q is not 1-65535", port)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

func (s *Server) handleForward(ctx context.Context, st *agentproto.Stream, log *slog.Logger, raw json.RawMessage) error {
	var p agentproto.ForwardParams
	if err := decodeParams(raw, &p); err != nil {
		return fail(st, err)
	}
	addr, err := forwardAddr(p.Addr)
	if err != nil {
		return fail(st, err)
	}
	d := net.Dialer{Timeout: forwardDialTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fail(st, agentproto.Errorf(agentproto.CodeDialFailed, "dial %s: %v", addr, err))
	}
	defer conn.Close()
	// The session may end while the TCP peer keeps its side open: ctx
	// ending (handle closes st then) must end both copies.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	if err := Respond(st, struct{}{}); err != nil {
		return err
	}
	log.Debug("forwarding", "addr", addr)
	Splice(st, conn)
	return nil
}

// Splice copies both ways; each side's EOF is passed on as a half-close,
// and both are fully closed once both directions are done (or one fails).
func Splice(a, b net.Conn) {
	var wg sync.WaitGroup
	one := func(dst, src net.Conn) {
		defer wg.Done()
		_, err := io.Copy(dst, src)
		if err != nil {
			_ = a.Close()
			_ = b.Close()
			return
		}
		_ = agentproto.CloseWrite(dst)
	}
	wg.Add(2)
	go one(a, b)
	go one(b, a)
	wg.Wait()
	_ = a.Close()
	_ = b.Close()
}
