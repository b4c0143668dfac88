package detach

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStartWritesToTheGivenLogAndTailsItOnFailure(t *testing.T) {
	logf, err := OpenLog(filepath.Join(t.TempDir(), "x.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	_, err = Start(Spec{Path: "/bin/sh", Args: []string{"-c", "echo first; echo second >&2; exit 3"}, Log: logf}, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "first") || !strings.Contains(err.Error(), "second") {
		t.Fatalf("failed start: %v, want the log's last lines", err)
	}
	c, err := Start(Spec{Path: "/bin/sh", Args: []string{"-c", "echo ready >&3; exec sleep 30"}, Log: logf}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if p, err := os.FindProcess(c.Pid); err == nil {
			p.Kill()
		}
	}()
	st, err := StartTime(c.Pid)
	if err != nil || st == 0 || st != c.StartTime {
		t.Fatalf("start time %d (%v), child reported %d", st, err, c.StartTime)
	}
	if _, err := Start(Spec{Path: "/bin/true"}, time.Second); err == nil {
		t.Fatal("start without a log descriptor was accepted")
	}
}
