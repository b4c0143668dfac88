package sshkeys

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// ErrHostKeyChanged means the guest presented a host key other than the
// one pinned on first use: a man in the middle, or a guest whose keys were
// regenerated. Either way banger refuses until the user forgets the key.
var ErrHostKeyChanged = errors.New("host key changed")

// HostKeyChangedError names the VM whose key changed and the way out.
type HostKeyChangedError struct {
	VM          string
	Pinned      string // fingerprint of the pinned key
	Presented   string // fingerprint of the key the guest presented
	Algorithm   string
	PinnedSince time.Time
}

func (e *HostKeyChangedError) Error() string {
	return fmt.Sprintf("REFUSING to connect: the %s host key of vm %q changed since banger first trusted it on %s "+
		"(pinned %s, now %s). Someone may be intercepting the connection, or the guest's host keys were regenerated. "+
		"If you know why it changed, forget the old key with: banger vm ssh --forget-host-key %s",
		e.Algorithm, e.VM, e.PinnedSince.Format(time.RFC3339), e.Pinned, e.Presented, e.VM)
}

func (e *HostKeyChangedError) Unwrap() error { return ErrHostKeyChanged }

// PinFunc decides about the key a guest presented: nil trusts it (pinned
// now, or pinned before and equal), an error refuses it.
type PinFunc func(key ssh.PublicKey) error

// AuthorizedForm renders key as an authorized_keys line without comment.
func AuthorizedForm(key ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))
}

// Probe connects to addr (host:port) and runs the SSH handshake only as far
// as the host key check, handing the guest's key to pin. It never
// authenticates. A refused or unreachable port is retried (sshd may still
// be starting) until ctx ends.
func Probe(ctx context.Context, addr string, pin PinFunc) error {
	delay := 100 * time.Millisecond
	for {
		err := probeOnce(ctx, addr, pin)
		if err == nil || !retryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("reach sshd at %s: %w (last error: %v)", addr, ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(delay*2, time.Second)
	}
}

// errDialing marks failures before the SSH handshake began.
type errDialing struct{ err error }

func (e errDialing) Error() string { return e.err.Error() }
func (e errDialing) Unwrap() error { return e.err }

func retryable(err error) bool {
	var d errDialing
	return errors.As(err, &d)
}

func probeOnce(ctx context.Context, addr string, pin PinFunc) error {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return errDialing{fmt.Errorf("connect to sshd at %s: %w", addr, err)}
	}
	defer conn.Close()
	deadline := time.Now().Add(20 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	var checked bool
	var pinErr error
	cfg := &ssh.ClientConfig{
		User:              "root",
		HostKeyAlgorithms: []string{HostKeyAlgorithm},
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			checked = true
			if pinErr = pin(key); pinErr != nil {
				return pinErr
			}
			// Verified: stop here, there is nothing to log in for.
			return errProbeDone
		},
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err == nil {
		// Unreachable in practice: the callback always fails the handshake.
		go ssh.DiscardRequests(reqs)
		go func() {
			for ch := range chans {
				_ = ch.Reject(ssh.Prohibited, "probe")
			}
		}()
		c.Close()
	}
	switch {
	case pinErr != nil:
		return pinErr
	case checked:
		return nil
	case err != nil:
		return fmt.Errorf("ssh handshake with %s: %w", addr, err)
	}
	return nil
}

var errProbeDone = errors.New("host key verified")
