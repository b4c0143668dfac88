package api

// Method describes one method of the owner daemon or the root helper: its
// wire name, its request and response types, and whether a call is listed
// in daemon.operations.list while it runs. Servers register handlers and
// clients call through it (see internal/rpc: Register, Invoke, OpenStream),
// so a request or result of the wrong type does not compile.
//
// Descriptors are declared next to their types, one block per area. The
// root helper's are named MethodHelper…; every other descriptor is the
// owner daemon's (the registration tests rely on this).
type Method[Req, Resp any] struct {
	Name string
	// Tracked calls appear in the operations list; instant reads and
	// endless watches are left out, they would only clutter it.
	Tracked bool
}

// MethodName returns the wire name, for code that handles methods without
// their types (logs, tables).
func (m Method[Req, Resp]) MethodName() string { return m.Name }
