// Package api defines banger's wire types: the methods of the owner daemon and
// the root helper, their parameters and results, and the typed errors that
// cross the socket. Both ends import it; nothing here does I/O.
package api

import (
	"errors"
	"fmt"
	"time"

	"github.com/bangerdev/banger/internal/buildinfo"
)

// Version is the wire protocol version, sent with every request. A daemon
// refuses requests from a newer protocol with CodeUnimplemented.
const Version = 1

// Owner daemon methods (see daemon.methods).
var (
	MethodDaemonPing     = Method[Empty, Empty]{Name: "daemon.ping"}
	MethodDaemonStatus   = Method[Empty, DaemonStatus]{Name: "daemon.status"}
	MethodDaemonShutdown = Method[Empty, Empty]{Name: "daemon.shutdown"}
	MethodOperationsList = Method[Empty, OperationsList]{Name: "daemon.operations.list"}
	// MethodDebugSleep is test-only, registered with --enable-test-methods.
	MethodDebugSleep = Method[SleepParams, Empty]{Name: "debug.sleep", Tracked: true}
)

// Root helper methods of its own (see roothelper's methods).
var (
	MethodHelperPing     = Method[Empty, Empty]{Name: "helper.ping"}
	MethodHelperShutdown = Method[Empty, Empty]{Name: "helper.shutdown"}
	MethodHelperIdentity = Method[Empty, HelperIdentity]{Name: "helper.identity"}
)

// Error codes that survive the wire.
const (
	CodeInvalidArgument    = "invalid_argument"
	CodeNotFound           = "not_found"
	CodeAlreadyExists      = "already_exists"
	CodeFailedPrecondition = "failed_precondition"
	CodePermissionDenied   = "permission_denied"
	CodeUnavailable        = "unavailable"
	CodeUnimplemented      = "unimplemented"
	CodeCanceled           = "canceled"
	CodeInternal           = "internal"
)

// Error is a typed error with the op_id of the request that caused it.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	OpID    string `json:"op_id,omitempty"`

	// cause is the error Wrap gave a code to: in-process callers still
	// see it through errors.Is/As; only code and message cross the wire.
	cause error
}

func (e *Error) Error() string {
	if e.OpID != "" {
		return fmt.Sprintf("%s (op %s)", e.Message, e.OpID)
	}
	return e.Message
}

// Is lets errors.Is match on the code alone: errors.Is(err, &api.Error{Code: api.CodeNotFound}).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Message == "" || t.Message == e.Message)
}

// Unwrap returns the error Wrap was given (nil for errors built otherwise).
func (e *Error) Unwrap() error { return e.cause }

// Wrap gives err a wire code at a boundary (the place that knows which of
// its sentinel errors means what), keeping err as the cause: errors.Is and
// errors.As see through the result, and its message is err's. A nil err
// gives nil.
func Wrap(code string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Message: err.Error(), cause: err}
}

// Errorf builds a typed error.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns the wire code of err (CodeInternal for untyped errors).
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// Empty is the params or result of methods that take or return nothing.
type Empty struct{}

// DaemonStatus is daemon.status's result.
type DaemonStatus struct {
	PID           int            `json:"pid"`
	Build         buildinfo.Info `json:"build"`
	StartedAt     time.Time      `json:"started_at"`
	UptimeSeconds float64        `json:"uptime_seconds"`
	Socket        string         `json:"socket"`
	Home          string         `json:"state_dir"`
	Store         string         `json:"store"`
	SchemaVersion int            `json:"schema_version"`
	Helper        HelperStatus   `json:"helper"`
	// Resources are the daemon's own counts (leak checks: the soak test).
	Resources *ProcessResources `json:"resources,omitempty"`
}

// ProcessResources are a process's goroutines, open descriptors and
// resident memory.
type ProcessResources struct {
	Goroutines int `json:"goroutines"`
	FDs        int `json:"fds"`
	// RSSBytes is the resident set (VmRSS), for the load tests' flatness
	// check; 0 where /proc cannot tell.
	RSSBytes int64 `json:"rss_bytes,omitempty"`
}

// HelperStatus says how the daemon reaches the root helper.
type HelperStatus struct {
	Socket    string `json:"socket"`
	Reachable bool   `json:"reachable"`
	PID       int    `json:"pid,omitempty"`
	Version   string `json:"version,omitempty"`
	Error     string `json:"error,omitempty"`
	// Resources are the helper's counts, as it reported them.
	Resources *ProcessResources `json:"resources,omitempty"`
}

// HelperIdentity is helper.identity's result.
type HelperIdentity struct {
	PID      int            `json:"pid"`
	Build    buildinfo.Info `json:"build"`
	OwnerUID int            `json:"owner_uid"`
	Managed  bool           `json:"managed"` // spawned by a daemon (stopped with it) rather than by systemd
	// Resources: the helper's goroutines and descriptors (leak checks).
	Resources *ProcessResources `json:"resources,omitempty"`
}

// Operation is one in-flight operation in daemon.operations.list.
type Operation struct {
	OpID      string    `json:"op_id"`
	Method    string    `json:"method"`
	Target    string    `json:"target,omitempty"`
	StartedAt time.Time `json:"started_at"`
	Stage     string    `json:"stage,omitempty"`
	Done      int64     `json:"done,omitempty"`
	Total     int64     `json:"total,omitempty"`
	Unit      string    `json:"unit,omitempty"`
}

// OperationsList is daemon.operations.list's result.
type OperationsList struct {
	Operations []Operation `json:"operations"`
}

// SleepParams drives the test-only debug.sleep method.
type SleepParams struct {
	Milliseconds int    `json:"milliseconds"`
	Target       string `json:"target,omitempty"`
}
