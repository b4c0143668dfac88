package system

import (
	"os"
	"runtime"

	"github.com/bangerdev/banger/internal/api"
)

// Resources counts this process's goroutines and open descriptors, for
// leak checks (daemon status, helper identity, the soak test).
func Resources() *api.ProcessResources {
	r := &api.ProcessResources{Goroutines: runtime.NumGoroutine()}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		r.FDs = len(ents) - 1 // not the descriptor ReadDir itself held
	}
	return r
}
