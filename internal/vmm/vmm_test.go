package vmm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestStepsRunUndoLIFO(t *testing.T) {
	var trace []string
	step := func(name string, fail bool) Step[*[]string] {
		return Step[*[]string]{Name: name, Fn: func(ctx context.Context, s *[]string, u *Undo) error {
			*s = append(*s, "do "+name)
			u.Push(func(context.Context) error {
				*s = append(*s, "undo "+name)
				return errors.New("undo " + name + " failed")
			})
			if fail {
				return errors.New("boom")
			}
			return nil
		}}
	}
	steps := Steps[*[]string]{step("a", false), step("c", true)}.
		InsertAfter("a", step("b", false)).
		InsertBefore("a", step("v", false)).
		InsertAfter("c", step("never", false))
	if got := strings.Join(steps.Names(), ","); got != "v,a,b,c,never" {
		t.Fatalf("chain %s", got)
	}
	var buf bytes.Buffer
	var undo Undo
	err := steps.Run(context.Background(), slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), &trace, &undo)
	var se *StepError
	if !errors.As(err, &se) || se.Step != "c" || !strings.Contains(err.Error(), "step c: boom") || !strings.Contains(err.Error(), "undo a failed") {
		t.Fatalf("error %v", err)
	}
	want := "do v,do a,do b,do c,undo c,undo b,undo a,undo v"
	if got := strings.Join(trace, ","); got != want {
		t.Fatalf("trace %s, want %s", got, want)
	}
	if !strings.Contains(buf.String(), "step=b") || !strings.Contains(buf.String(), "took=") {
		t.Fatalf("steps not logged: %s", buf.String())
	}
	if undo.Run(context.Background()) != nil {
		t.Fatal("undo list not emptied")
	}
	if got := steps.Remove("never").Replace(step("c", false)); got.Has("never") || len(got) != 4 {
		t.Fatalf("edit: %v", got.Names())
	}
	if len(steps) != 5 {
		t.Fatal("edits changed the original chain")
	}
}

func TestDetachedProcessLifecycle(t *testing.T) {
	log := filepath.Join(t.TempDir(), "out.log")
	p, err := StartDetached(Command{Path: "/bin/sh", Args: []string{"-c", "echo started; exec sleep 60"}, LogPath: log})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Kill(p.PID, unix.SIGKILL)
	if sid, _ := unix.Getsid(p.PID); sid != p.PID {
		t.Fatalf("not a session leader: sid %d", sid)
	}
	st, err := ProcStartTime(p.PID)
	if err != nil || st != p.StartTime || st == 0 {
		t.Fatalf("start time %d vs %d: %v", st, p.StartTime, err)
	}
	if ok, r := ProcessAlive(p.PID, p.StartTime); !ok {
		t.Fatal(r)
	}
	if ok, r := ProcessAlive(p.PID, p.StartTime+1); ok || !strings.Contains(r, "reused") {
		t.Fatalf("wrong start time accepted: %s", r)
	}
	// A signal aimed at a reused pid must not reach this process.
	if err := SignalProcess(p.PID, p.StartTime+1, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if ok, _ := ProcessAlive(p.PID, p.StartTime); !ok {
		t.Fatal("signal hit a process with another start time")
	}
	begin := time.Now()
	if err := WaitGone(context.Background(), p.PID, p.StartTime, 300*time.Millisecond); err == nil {
		t.Fatal("wait on a live process returned nil")
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("bounded wait took %s", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := WaitGone(ctx, p.PID, p.StartTime, time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
	if err := KillAndWait(context.Background(), p.PID, p.StartTime, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("not reaped")
	}
	if ok, _ := ProcessAlive(p.PID, p.StartTime); ok {
		t.Fatal("alive after kill")
	}
	if out, _ := os.ReadFile(log); string(out) != "started\n" {
		t.Fatalf("log %q", out)
	}
	// Gone processes: no error.
	if err := KillAndWait(context.Background(), p.PID, p.StartTime, time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestStartDetachedExtraFiles: ExtraFiles reach the process as
// descriptors 3, 4, … (how QEMU gets an already opened tap). The child
// lingers a second: StartDetached refuses a process that exits at once.
func TestStartDetachedExtraFiles(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p, err := StartDetached(Command{Path: "/bin/sh", Args: []string{"-c", "echo through-fd3 >&3; exec sleep 1"}, ExtraFiles: []*os.File{w}})
	w.Close() // the child holds its own copy
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	case <-time.After(10 * time.Second):
		_ = unix.Kill(p.PID, unix.SIGKILL)
		t.Fatal("child did not exit within 10s")
	}
	if p.ExitErr() != nil {
		t.Fatalf("child: %v", p.ExitErr())
	}
	out, err := io.ReadAll(r)
	if err != nil || string(out) != "through-fd3\n" {
		t.Fatalf("read %q (%v) from the pipe, want what the child wrote to fd 3", out, err)
	}
}

func TestStartDetachedMissingBinary(t *testing.T) {
	if _, err := StartDetached(Command{Path: filepath.Join(t.TempDir(), "nope")}); err == nil {
		t.Fatal("started a missing binary")
	}
}

func TestTrimConsoleKeepsTailForAppendingWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := range 200 {
		if _, err := io.WriteString(w, strings.Repeat("x", 40)+" line "+string(rune('a'+i%26))+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := io.WriteString(w, "LAST LINE\n"); err != nil {
		t.Fatal(err)
	}
	if trimmed, err := TrimConsole(path, 1000); err != nil || !trimmed {
		t.Fatalf("trim: %v %v", trimmed, err)
	}
	b, _ := os.ReadFile(path)
	if len(b) > 1000 || !bytes.HasSuffix(b, []byte("LAST LINE\n")) || !bytes.HasPrefix(b, []byte("xxxx")) {
		t.Fatalf("after trim (%d bytes): %q", len(b), b)
	}
	// The writer's next write lands at the new end, with no hole.
	if _, err := io.WriteString(w, "AFTER\n"); err != nil {
		t.Fatal(err)
	}
	b2, _ := os.ReadFile(path)
	if !bytes.Equal(b2, append(b, "AFTER\n"...)) {
		t.Fatalf("append after trim: %q", b2[max(0, len(b2)-40):])
	}
	if trimmed, _ := TrimConsole(path, 1<<20); trimmed {
		t.Fatal("trimmed a small file")
	}
	if tail, err := TailFile(path, 2); err != nil || tail != "LAST LINE\nAFTER" {
		t.Fatalf("tail %q %v", tail, err)
	}
	if tail, err := TailFile(filepath.Join(t.TempDir(), "none"), 2); err != nil || tail != "" {
		t.Fatalf("missing file tail %q %v", tail, err)
	}
}
