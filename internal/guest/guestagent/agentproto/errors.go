package agentproto

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

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

// MaxErrorMessage bounds the message of an error read from the other side.
const MaxErrorMessage = 1024

// Tame makes an error read from the other side (for the host: the guest,
// which is untrusted) safe to log, store and print: a code that is not a
// plain token becomes CodeInternal, and the message loses control and
// bidi-override characters and is cut to maxErrorMessage bytes.
func Tame(e *Error) *Error {
	code := e.Code
	if code == "" || len(code) > 32 || strings.IndexFunc(code, func(r rune) bool { return (r < 'a' || r > 'z') && r != '_' }) >= 0 {
		code = CodeInternal
	}
	msg := strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t':
			return ' '
		case unicode.IsControl(r), r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == utf8.RuneError:
			return '?'
		}
		return r
	}, strings.ToValidUTF8(e.Message, "?"))
	if len(msg) > MaxErrorMessage {
		cut := MaxErrorMessage
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return &Error{Code: code, Message: msg}
}
