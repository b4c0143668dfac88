package vsockagent

// Sentinels for the agent's error codes, for errors.Is on either side of
// the channel: an *Error matches the sentinel of its code whatever its
// message (see Error.Is), so callers never compare code strings.
var (
	ErrBadRequest    = &Error{Code: CodeBadRequest}
	ErrUnknownMethod = &Error{Code: CodeUnknownMethod}
	ErrNotFound      = &Error{Code: CodeNotFound}
	ErrExecFailed    = &Error{Code: CodeExecFailed}
	ErrDialFailed    = &Error{Code: CodeDialFailed}
	ErrUnsupported   = &Error{Code: CodeUnsupported}
	ErrIO            = &Error{Code: CodeIO}
)
