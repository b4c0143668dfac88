package system

import (
	"bytes"
	"os"
	"runtime"
	"strconv"

	"github.com/bangerdev/banger/internal/api"
)

// Resources counts this process's goroutines, open descriptors and resident
// memory, for leak checks (daemon status, helper identity, the soak and
// load tests).
func Resources() *api.ProcessResources {
	r := &api.ProcessResources{Goroutines: runtime.NumGoroutine()}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		r.FDs = len(ents) - 1 // not the descriptor ReadDir itself held
	}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		r.RSSBytes = vmRSS(b)
	}
	return r
}

// vmRSS reads the VmRSS line of /proc/PID/status ("VmRSS:   1234 kB").
func vmRSS(status []byte) int64 {
	for _, l := range bytes.Split(status, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(l, []byte("VmRSS:")); ok {
			f := bytes.Fields(rest)
			if len(f) == 2 && string(f[1]) == "kB" {
				if n, err := strconv.ParseInt(string(f[0]), 10, 64); err == nil {
					return n << 10
				}
			}
		}
	}
	return 0
}
