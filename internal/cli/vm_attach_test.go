package cli

import (
	"bytes"
	"testing"
)

func TestDetachScanner(t *testing.T) {
	cases := []struct {
		name   string
		chunks []string
		sent   string
		detach bool
	}{
		{"plain text", []string{"ls -l\r"}, "ls -l\r", false},
		{"ctrl-backslash", []string{"ab\x1ccd"}, "ab", true},
		{"ctrl-p ctrl-q", []string{"x\x10\x11y"}, "x", true},
		{"split across reads", []string{"x\x10", "\x11"}, "x", true},
		{"ctrl-p then other key is sent", []string{"\x10a"}, "\x10a", false},
		{"ctrl-p ctrl-p ctrl-q", []string{"\x10\x10\x11"}, "\x10", true},
		{"escapes and utf-8 pass", []string{"\x1b[A h\xc3\xa9"}, "\x1b[A h\xc3\xa9", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var sc detachScanner
			var sent []byte
			detach := false
			for _, c := range tc.chunks {
				out, d := sc.feed([]byte(c))
				sent = append(sent, out...)
				if d {
					detach = true
					break
				}
			}
			if !bytes.Equal(sent, []byte(tc.sent)) || detach != tc.detach {
				t.Fatalf("sent %q detach %v, want %q %v", sent, detach, tc.sent, tc.detach)
			}
		})
	}
}
