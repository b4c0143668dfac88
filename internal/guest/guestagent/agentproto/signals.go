package agentproto

import (
	"syscall"
)

// SignalsByName maps the signal names exec's 's' frame carries to the
// signals the guest delivers: the only signals the host may forward.
var SignalsByName = map[string]syscall.Signal{
	"INT":  syscall.SIGINT,
	"TERM": syscall.SIGTERM,
	"KILL": syscall.SIGKILL,
	"HUP":  syscall.SIGHUP,
	"QUIT": syscall.SIGQUIT,
	"USR1": syscall.SIGUSR1,
	"USR2": syscall.SIGUSR2,
}
