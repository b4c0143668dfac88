package daemon

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/bangerdev/banger/internal/system"
	"golang.org/x/sys/unix"
)

// ErrAlreadyRunning means another daemon holds the state directory's lock.
var ErrAlreadyRunning = errors.New("another bangerd is already running on this state directory")

// stateLock is an exclusive flock on the state directory, held for the
// daemon's lifetime; the kernel drops it if the daemon dies.
type stateLock struct{ f *os.File }

func acquireLock(lockPath, pidPath string) (*stateLock, error) {
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file %s: %w", lockPath, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			holder := "unknown pid"
			if b, rerr := os.ReadFile(pidPath); rerr == nil {
				holder = "pid " + strings.TrimSpace(string(b))
			}
			return nil, fmt.Errorf("%w (%s, lock %s): stop it with `banger daemon stop` or use another BANGER_HOME", ErrAlreadyRunning, holder, lockPath)
		}
		return nil, fmt.Errorf("lock %s: %w", lockPath, err)
	}
	return &stateLock{f: f}, nil
}

func (l *stateLock) release() {
	_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	_ = l.f.Close()
}

func writePidFile(path string) error {
	if err := system.WriteFileAtomic(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	return nil
}
