package progress

import (
	"strings"
)

// Lines turns the raw output of a tool that prints one line per step
// (debootstrap) into one counting progress item: each step line moves the
// counter and names what is being worked on; other lines only update the
// message. The tool's text is passed on as is: renderers make it inert.
type Lines struct {
	Stage string
	// Step reports whether line is a step and the message to show for it.
	Step func(line string) (msg string, step bool)
	done int64
}

// Line turns one output line into an event; ok is false for blank lines.
func (l *Lines) Line(line string) (ev Event, ok bool) {
	line = strings.TrimSpace(line)
	if line == "" {
		return Event{}, false
	}
	msg, step := line, false
	if l.Step != nil {
		msg, step = l.Step(line)
	}
	if step {
		l.done++
	}
	// Done stays at least 1 so renderers keep one bar for the whole run
	// rather than printing each line.
	return Event{Stage: l.Stage, Done: max(l.done, 1), Unit: "steps", Message: msg}, true
}

// DebootstrapStep recognises debootstrap's per-package lines ("I:
// Retrieving libc6 2.36-9", "I: Unpacking libc6...", "I: Configuring
// libc6...") as steps, shown as "unpacking libc6"; its other lines ("I:
// Resolving dependencies of base packages...", "W: ...") are messages.
func DebootstrapStep(line string) (string, bool) {
	rest, ok := strings.CutPrefix(line, "I: ")
	if !ok {
		return line, false
	}
	verb, obj, _ := strings.Cut(rest, " ")
	switch verb {
	case "Retrieving", "Validating", "Extracting", "Unpacking", "Configuring":
		name, _, _ := strings.Cut(strings.TrimSuffix(obj, "..."), " ")
		if name == "" || name == "Release" || name == "Packages" || name == "InRelease" {
			return rest, false // archive indexes, not packages
		}
		return strings.ToLower(verb) + " " + name, true
	}
	return rest, false
}
