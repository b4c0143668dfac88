package vmlife

import "fmt"

// StartError is a failed boot: which VM, the step that failed, the cause
// (the chain's error, which unwraps to a *vmm.StepError and what the step
// returned) and the console's last lines.
type StartError struct {
	VM      string
	Step    string
	Err     error
	Console string // last console lines; "" when the VMM never wrote any
}

func (e *StartError) Error() string {
	msg := fmt.Sprintf("start vm %q: %v", e.VM, e.Err)
	if e.Console != "" {
		msg += "\nlast console lines:\n" + e.Console
	}
	return msg
}

func (e *StartError) Unwrap() error { return e.Err }
