package progress

import (
	"bufio"
	"strings"
	"testing"
)

// A recorded-looking debootstrap run: per-package lines count, the rest
// are messages, and the counter never goes back.
func TestDebootstrapLines(t *testing.T) {
	out := `I: Retrieving InRelease 
I: Checking Release signature
I: Valid Release signature (key id 4D64FEC119C2029067D6E791F8D2585B8783D481)
I: Retrieving Packages 
I: Validating Packages 
I: Resolving dependencies of required packages...

I: Retrieving adduser 3.134
I: Validating adduser 3.134
I: Retrieving libc6 2.36-9+deb12u9
I: Validating libc6 2.36-9+deb12u9
I: Extracting libc6...
I: Installing core packages...
I: Unpacking libc6...
W: Failure trying to run: chroot "/x" mount -t proc proc /proc
I: Configuring libc6...
I: Base system installed successfully.
`
	l := Lines{Stage: "debootstrap", Step: DebootstrapStep}
	var evs []Event
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if ev, ok := l.Line(sc.Text()); ok {
			evs = append(evs, ev)
		}
	}
	if len(evs) != 16 {
		t.Fatalf("%d events from 16 non-blank lines", len(evs))
	}
	var last int64
	for i, ev := range evs {
		if ev.Done < last || ev.Done < 1 || ev.Stage != "debootstrap" || ev.Unit != "steps" || ev.Total != 0 {
			t.Fatalf("event %d: %+v after done=%d", i, ev, last)
		}
		last = ev.Done
	}
	if last != 7 {
		t.Fatalf("%d steps counted, want 7 (2 adduser, 5 libc6)", last)
	}
	for i, want := range map[int]string{
		1:  "Checking Release signature",
		5:  "Resolving dependencies of required packages...",
		8:  "retrieving libc6",
		10: "extracting libc6",
		12: "unpacking libc6",
		13: `W: Failure trying to run: chroot "/x" mount -t proc proc /proc`,
		14: "configuring libc6",
	} {
		if evs[i].Message != want {
			t.Errorf("event %d message %q, want %q", i, evs[i].Message, want)
		}
	}
}
