package agentproto

import (
	"bytes"
	"errors"
	"io"
	"log"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
)

// VirtioPortName is the virtio-serial port name QEMU is given
// (virtserialport,name=banger.agent); the guest finds it under /dev/virtio-ports.
const VirtioPortName = "banger.agent"

// Handshake lines that open a session on the shared virtio-serial channel
// (see doc.go). The host repeats HELLO until it reads READY with its nonce.
const (
	HelloPrefix = "BANGER-AGENT-HELLO 1 "
	ReadyPrefix = "BANGER-AGENT-READY 1 "
	StartPrefix = "BANGER-AGENT-START 1 "
)

// Timing of the session handshake (host) and of reopening the port (guest).
const (
	HelloInterval    = 250 * time.Millisecond
	HandshakeTimeout = 10 * time.Second
	PortBackoffMin   = 50 * time.Millisecond
	PortBackoffMax   = 500 * time.Millisecond
)

var (
	// ErrHandshake reports a channel on which no agent answered the handshake.
	ErrHandshake = errors.New("agent handshake failed")
	// ErrDialerClosed is returned by a closed YamuxDialer.
	ErrDialerClosed = errors.New("agent dialer closed")
)

// YamuxConfig is the yamux configuration of either side; the host's
// (host true) gives up fast on a guest that stopped answering.
func YamuxConfig(logger *slog.Logger, host bool) *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = nil
	cfg.Logger = log.New(slogWriter{logger}, "yamux: ", 0)
	if host {
		// A guest that rebooted behind a live chardev never answers: find out
		// fast and reconnect, rather than hang requests.
		cfg.KeepAliveInterval = 5 * time.Second
		cfg.ConnectionWriteTimeout = 5 * time.Second
		cfg.StreamOpenTimeout = 10 * time.Second
	}
	return cfg
}

type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Debug(strings.TrimSpace(string(p)))
	return len(p), nil
}

// BufferedRWC reads through r (which may hold bytes read past a handshake)
// and writes and closes the underlying channel.
type BufferedRWC struct {
	io.Reader
	RWC io.ReadWriteCloser
}

func (b BufferedRWC) Write(p []byte) (int, error) { return b.RWC.Write(p) }
func (b BufferedRWC) Close() error                { return b.RWC.Close() }

// HandshakeField finds prefix in line (stale bytes may precede it) and
// returns the nonce after it.
func HandshakeField(line []byte, prefix string) (string, bool) {
	i := bytes.Index(line, []byte(prefix))
	if i < 0 {
		return "", false
	}
	n := strings.TrimSpace(string(line[i+len(prefix):]))
	if n == "" || len(n) > 64 {
		return "", false
	}
	return n, true
}

// DefaultVsockPort is the guest port the agent listens on under Firecracker.
const DefaultVsockPort = 1024
