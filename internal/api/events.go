package api

import "github.com/bangerdev/banger/internal/events"

// Lifecycle events.
// MethodEventsWatch streams lifecycle events as KindEvent frames until the
// client goes away.
var MethodEventsWatch = Method[EventsWatch, Empty]{Name: "events.watch"}

const (
	KindEvent = "event" // daemon → client: Event
	// KindSubscribed is the stream's first frame (payload null): events
	// from here on reach this client, so it may read state now.
	KindSubscribed = "subscribed"
)

// Event is one lifecycle event (see internal/events for the kinds).
type Event = events.Event

// EventsWatch filters the stream; empty fields match everything.
type EventsWatch struct {
	VM string `json:"vm,omitempty"`
}
