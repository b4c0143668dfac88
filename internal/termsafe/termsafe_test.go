package termsafe

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// hostile is what a guest process can print or name itself: OSC 52 (write
// the clipboard), a screen clear, an 8-bit CSI, a C1 CSI as UTF-8, a bidi
// override, DEL, a bell, a lone CR and an invalid byte.
const hostile = "ok\x1b]52;c;cHduZWQ=\a\x1b[2J\x9b31m\u009b1m\u202eevil\x7f\x0dfake\xff\tend\n"

// terminalActive reports any byte or rune a terminal would act on.
func terminalActive(s string) bool {
	for _, r := range s {
		if (r < 0x20 && r != '\n' && r != '\t') || (r >= 0x7f && r <= 0x9f) || r == 0x202e || r == 0xfffd {
			return true
		}
	}
	return strings.ContainsAny(s, "\x1b\x9b\xff")
}

func TestText(t *testing.T) {
	got := Text(hostile)
	if terminalActive(got) {
		t.Fatalf("Text left active bytes: %q", got)
	}
	want := `ok\x1b]52;c;cHduZWQ=\x07\x1b[2J\x9b31m\u009b1m\u202eevil\x7f\x0dfake\xff` + "\tend\n"
	if got != want {
		t.Fatalf("Text(%q)\n got %q\nwant %q", hostile, got, want)
	}
	if s := "plain ünïcödé 日本語 text\n\twith layout"; Text(s) != s {
		t.Fatalf("printable text changed: %q", Text(s))
	}
}

func TestLine(t *testing.T) {
	if got := Line("a\tb\nc\x1b"); got != `a\x09b\x0ac\x1b` {
		t.Fatalf("Line: %q", got)
	}
}

func TestWriterSplitsAndCRLF(t *testing.T) {
	in := []byte("line one\r\nline two \u00e9\x1b[31m\r\n" + hostile)
	want := Text(strings.ReplaceAll(string(in), "\r\n", "\n"))
	// Every split point, so runes and CRLF cut across writes are covered.
	for cut := 0; cut <= len(in); cut++ {
		var out bytes.Buffer
		w := NewWriter(&out)
		for _, part := range [][]byte{in[:cut], in[cut:]} {
			if n, err := w.Write(part); err != nil || n != len(part) {
				t.Fatalf("write: %d %v", n, err)
			}
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Fatalf("cut at %d:\n got %q\nwant %q", cut, out.String(), want)
		}
	}
	var out bytes.Buffer
	w := NewWriter(&out)
	_, _ = w.Write([]byte("end\r"))
	_ = w.Flush()
	if out.String() != `end\x0d` {
		t.Fatalf("final lone CR: %q", out.String())
	}
}

func TestJSONKeepsValuesAndEscapes(t *testing.T) {
	v := map[string]string{"command": hostile}
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if !terminalActive(string(raw)) {
		t.Fatal("encoding/json escaped everything itself: this test no longer shows why JSON is needed")
	}
	safe := JSON(raw)
	if terminalActive(string(safe)) {
		t.Fatalf("JSON left active bytes: %s", safe)
	}
	var back map[string]string
	if err := json.Unmarshal(safe, &back); err != nil {
		t.Fatal(err)
	}
	var orig map[string]string
	_ = json.Unmarshal(raw, &orig)
	if back["command"] != orig["command"] {
		t.Fatalf("value changed: %q vs %q", back["command"], orig["command"])
	}
}
