package cli

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/bangerdev/banger/internal/progress"
)

// fakeDebootstrap is raw debootstrap output as a stream of lines.
const fakeDebootstrap = `I: Retrieving InRelease
I: Retrieving libc6 2.36-9
I: Validating libc6 2.36-9
I: Unpacking libc6...
I: Configuring libc6...
I: Configuring base-files...
`

func feed(r *progressRenderer) {
	l := progress.Lines{Stage: "debootstrap", Step: progress.DebootstrapStep}
	sc := bufio.NewScanner(strings.NewReader(fakeDebootstrap))
	for sc.Scan() {
		if ev, ok := l.Line(sc.Text()); ok {
			r.Handle(ev)
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// On a terminal, a tool's output is one bar naming the current step, not
// a line per output line.
func TestProgressToolLinesOnTerminal(t *testing.T) {
	ptm, pts, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptm.Close()
	if err := pty.Setsize(ptm, &pty.Winsize{Rows: 24, Cols: 120}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := ptm.Read(buf)
			mu.Lock()
			out.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	r := newProgressRenderer(pts)
	if r.p == nil {
		t.Fatal("a pty was not taken for a terminal")
	}
	feed(r)
	time.Sleep(300 * time.Millisecond) // a refresh after the last step
	r.Close()
	pts.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	mu.Lock()
	s := out.String()
	mu.Unlock()
	if !strings.Contains(s, "configuring base-files") || !strings.Contains(s, "5 steps") {
		t.Fatalf("terminal output lacks the last step or its count:\n%q", s)
	}
	if strings.Contains(s, "I: Unpacking libc6...\n") || strings.Count(s, "debootstrap") < 1 {
		t.Fatalf("raw tool lines reached the terminal:\n%q", s)
	}
}

// Elsewhere (logs, CI) a tool's progress is at most a line a second, with
// the count and the current step.
func TestProgressToolLinesPlain(t *testing.T) {
	var out bytes.Buffer
	r := newProgressRenderer(io.Writer(&out))
	feed(r)
	r.Close()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 || lines[0] != "debootstrap: 1 steps Retrieving InRelease" {
		t.Fatalf("plain output %q, want one rate-limited line", lines)
	}
}
