package vmm

import (
	"context"
	"errors"
	"os"
	"time"
)

// ErrExited: the process ended while WaitSocket waited for it.
var ErrExited = errors.New("process exited during start-up")

// WaitSocket waits until the control socket at path exists and answer
// succeeds on it, the process exits (ErrExited: the caller describes the
// exit with its output) or ctx ends (its error). A VMM makes its socket
// early in its start-up, so a short poll finds it quickly.
func (p *Process) WaitSocket(ctx context.Context, path string, answer func(ctx context.Context) error) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.Exited():
			return ErrExited
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if _, err := os.Stat(path); err != nil {
			continue
		}
		if answer(ctx) == nil {
			return nil
		}
	}
}
