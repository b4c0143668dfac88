package model

import (
	"errors"
	"fmt"
)

// VMState is where a VM is in its lifecycle.
type VMState string

const (
	StateCreating VMState = "creating" // disk, config and lease being prepared
	StateStarting VMState = "starting" // VMM launched, guest agent not yet answering
	StateRunning  VMState = "running"  // guest agent answered
	StateStopping VMState = "stopping" // shutdown requested
	StateStopped  VMState = "stopped"  // no VMM process
	StateError    VMState = "error"    // something failed; StateReason says what
	// StateSuspended: no VMM process; memory and device state saved in the
	// VM's dir (checksummed), resumable with the same boot_id.
	StateSuspended VMState = "suspended"
)

// States lists every state in lifecycle order.
var States = []VMState{StateCreating, StateStarting, StateRunning, StateStopping, StateStopped, StateError, StateSuspended}

// Valid reports whether s is one of the known states.
func (s VMState) Valid() bool {
	_, ok := transitions[s]
	return ok
}

// ErrInvalidTransition is returned when a state change is not in the table.
var ErrInvalidTransition = errors.New("invalid vm state transition")

// transitions lists, for each state, the states it may move to. Any state may
// move to error (error to error refines the reason).
//
//   - creating → stopped: a VM created without being started.
//   - starting → stopping: stop requested while the guest still boots.
//   - running → stopped: the VMM exited on its own (guest poweroff, or the
//     daemon found it gone on re-adoption).
//   - starting has no way to stopped: a VMM that exits before its guest is
//     ready is a failed boot, so error, with the reason.
//   - error → starting | stopped: retry, or clean up and park.
//   - running → suspended: state saved, VMM gone; suspended → running
//     (resumed: it stays suspended until the guest answers, so a failed
//     resume leaves it resumable) | stopped (saved state discarded).
var transitions = map[VMState][]VMState{
	StateCreating:  {StateStarting, StateStopped, StateError},
	StateStarting:  {StateRunning, StateStopping, StateError},
	StateRunning:   {StateStopping, StateStopped, StateSuspended, StateError},
	StateStopping:  {StateStopped, StateError},
	StateStopped:   {StateStarting, StateError},
	StateError:     {StateStarting, StateStopped, StateError},
	StateSuspended: {StateRunning, StateStarting, StateStopped, StateError},
}

// CanTransition reports whether a VM in state from may move to state to.
func CanTransition(from, to VMState) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// CheckTransition is CanTransition as an error wrapping ErrInvalidTransition
// that names the allowed targets.
func CheckTransition(from, to VMState) error {
	if CanTransition(from, to) {
		return nil
	}
	if !from.Valid() {
		return fmt.Errorf("%w: unknown state %q", ErrInvalidTransition, from)
	}
	return fmt.Errorf("%w: %s → %s (from %s a vm may go to %v)", ErrInvalidTransition, from, to, from, transitions[from])
}
