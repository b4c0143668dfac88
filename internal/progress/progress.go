// Package progress carries progress events from long work (downloads, pulls,
// builds) to whoever shows them: the daemon forwards them to the client as
// stream events, the CLI draws bars or plain lines.
package progress

import "time"

// Event is one progress report. Done and Total count Unit ("bytes", "files",
// "steps"); Total is 0 when unknown.
type Event struct {
	Stage   string    `json:"stage"`             // e.g. "pull", "layer sha256:ab12…", "mkfs"
	Item    string    `json:"item,omitempty"`    // what is being worked on within the stage
	Done    int64     `json:"done"`              // units done so far
	Total   int64     `json:"total,omitempty"`   // units expected, 0 if unknown
	Unit    string    `json:"unit,omitempty"`    // "bytes" by default
	Message string    `json:"message,omitempty"` // a human line, for stages with no counter
	Time    time.Time `json:"time"`
}

// Func receives progress events. A nil Func discards them; callers use
// Report to avoid nil checks.
type Func func(Event)

// Report sends ev to f when f is not nil, stamping the time if unset.
func (f Func) Report(ev Event) {
	if f == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	f(ev)
}

// Stage reports a message-only event.
func (f Func) Stage(stage, msg string) {
	f.Report(Event{Stage: stage, Message: msg})
}
