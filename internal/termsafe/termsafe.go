// Package termsafe makes text that came from a guest (console output,
// process names, agent error messages) safe to show on a terminal. A guest
// is hostile: raw, such text could carry escape sequences that write the
// clipboard (OSC 52), retitle the window, redraw the screen to spoof
// output or, on some terminals, answer back as keyboard input. Everything a
// terminal would act on is written as a visible escape instead: C0 controls
// and DEL as \xNN, C1 controls and bidirectional overrides as \uNNNN, bytes
// that are not UTF-8 as \xNN. Printable text, in any script, is unchanged.
package termsafe

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Line escapes s for one cell or line of human output: newline and tab are
// escaped too, so a value cannot break a table's rows or columns.
func Line(s string) string { return escape(s, false) }

// Text escapes s for multi-line human output (an error message): newline
// and tab are kept, everything else as Line.
func Text(s string) string { return escape(s, true) }

func escape(s string, keepLayout bool) string {
	if clean(s, keepLayout) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		appendRune(&b, s[i:i+n], r, keepLayout)
		i += n
	}
	return b.String()
}

func clean(s string, keepLayout bool) bool {
	for _, r := range s {
		if unsafe(r, keepLayout) {
			return false
		}
	}
	return true
}

// unsafe reports runes a terminal acts on (utf8.RuneError stands for an
// invalid byte here; a real U+FFFD is escaped too, which is harmless).
func unsafe(r rune, keepLayout bool) bool {
	switch {
	case r == '\n' || r == '\t':
		return !keepLayout
	case r < 0x20, r >= 0x7f && r <= 0x9f:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
		return true // bidi controls: reorder what is shown
	case r == utf8.RuneError:
		return true
	}
	return false
}

func appendRune(b *strings.Builder, raw string, r rune, keepLayout bool) {
	switch {
	case !unsafe(r, keepLayout):
		b.WriteString(raw)
	case r == utf8.RuneError && len(raw) == 1:
		fmt.Fprintf(b, `\x%02x`, raw[0])
	case r < 0x80:
		fmt.Fprintf(b, `\x%02x`, r)
	default:
		fmt.Fprintf(b, `\u%04x`, r)
	}
}

// Writer escapes a byte stream (a serial console) as Text does, and turns
// CRLF into LF, which the console writes for every line; a lone CR, which
// would let a line overwrite itself, is escaped. A rune or CRLF split
// between two writes is held until the next one; Flush writes what is held.
type Writer struct {
	w       io.Writer
	pending []byte
}

// NewWriter returns a Writer to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write escapes p; it reports len(p) when the escaped form was written.
func (w *Writer) Write(p []byte) (int, error) {
	data := append(w.pending, p...)
	w.pending = nil
	var sb strings.Builder
	i := 0
	for i < len(data) {
		c := data[i]
		if c == '\r' {
			if i+1 == len(data) {
				break // maybe the first half of CRLF
			}
			if data[i+1] == '\n' {
				i++ // CRLF: the LF is written next
				continue
			}
		}
		if c >= utf8.RuneSelf && !utf8.FullRune(data[i:]) && len(data)-i < utf8.UTFMax {
			break // a rune split across writes
		}
		r, n := utf8.DecodeRune(data[i:])
		appendRune(&sb, string(data[i:i+n]), r, true)
		i += n
	}
	w.pending = append([]byte(nil), data[i:]...)
	if _, err := io.WriteString(w.w, sb.String()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes what a Write held back, escaped (a final lone CR, a cut rune).
func (w *Writer) Flush() error {
	if len(w.pending) == 0 {
		return nil
	}
	s := Text(string(w.pending))
	w.pending = nil
	_, err := io.WriteString(w.w, s)
	return err
}

// JSON escapes, inside JSON text from encoding/json, the runes it leaves
// raw but a terminal acts on (DEL, C1 controls, bidi controls), as \uNNNN.
// Those can only occur inside strings, where \uNNNN means the same rune,
// so the document decodes to the same values.
func JSON(b []byte) []byte {
	if clean(string(b), true) {
		return b
	}
	var out bytes.Buffer
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError && unsafe(r, true) {
			fmt.Fprintf(&out, `\u%04x`, r)
		} else {
			out.Write(b[i : i+n])
		}
		i += n
	}
	return out.Bytes()
}
