package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/testutil"
)

// TestSnapshotRemoveRacesFork: snapshot rm --force is fired again and
// again, through the daemon, while two forks restore clones from the same
// snapshot. Every rm that lands while a fork runs is refused and says why;
// the forks make all their clones, which run; the snapshot's files are
// intact and list exactly those clones; once the forks are done rm works,
// and the clones (on their own disks) run on. A fork started after the
// removal is refused and makes nothing.
func TestSnapshotRemoveRacesFork(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	in.ok("banger", "vm", "create", "--start", "--name", "src", "--memory", "384M", "--cpus", "1")
	in.ok("banger", "vm", "snapshot", "src", "--as", "racy", "--stop")
	sn := snapSnapshot(t, in, "racy")
	start := func(args ...string) (*exec.Cmd, *strings.Builder, <-chan error) {
		cmd := exec.Command(filepath.Join(binDir, "banger"), args...)
		cmd.Env = in.env()
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		return cmd, &out, done
	}
	_, out1, done1 := start("vm", "fork", "racy", "--name", "ra", "--count", "2")
	_, out2, done2 := start("vm", "fork", "racy", "--name", "rb")
	// Hammer rm from the moment a clone is recorded until both forks end.
	waitFor(t, 3*time.Minute, "a clone is recorded", func() (bool, string) {
		ls, _, _ := in.run("banger", "vm", "ls", "--format", "{{.Name}}")
		return strings.Contains(ls, "ra-1") || strings.Contains(ls, "rb"), ls
	})
	var refused int
	var err1, err2 error
	var ended1, ended2, removed bool
	deadline := time.Now().Add(5 * time.Minute)
	for !(ended1 && ended2) {
		if time.Now().After(deadline) {
			t.Fatal("the forks did not end in 5m")
		}
		select {
		case err1 = <-done1:
			ended1 = true
		case err2 = <-done2:
			ended2 = true
		default:
		}
		if ended1 && ended2 {
			break
		}
		_, errOut, code := in.run("banger", "snapshot", "rm", "racy", "--force")
		if code == 0 {
			// Only legitimate in the instant between the daemon ending
			// both forks and their CLIs exiting: both must have succeeded.
			for _, d := range []struct {
				ended *bool
				err   *error
				ch    <-chan error
			}{{&ended1, &err1, done1}, {&ended2, &err2, done2}} {
				if !*d.ended {
					select {
					case *d.err = <-d.ch:
						*d.ended = true
					case <-time.After(5 * time.Second):
						t.Fatalf("snapshot rm --force succeeded while a fork ran (fork outputs so far: %q, %q)", out1.String(), out2.String())
					}
				}
			}
			removed = true
			break
		}
		if !strings.Contains(errOut, "being forked from right now") {
			// With --force nothing but a fork in progress may refuse it.
			t.Fatalf("snapshot rm --force during a fork: %q", errOut)
		}
		refused++
		time.Sleep(150 * time.Millisecond)
	}
	if err1 != nil || err2 != nil {
		t.Fatalf("forks: %v %q / %v %q", err1, out1.String(), err2, out2.String())
	}
	if refused == 0 {
		t.Fatal("no rm landed while the forks ran: the race was not exercised")
	}
	t.Logf("%d removals refused while the forks ran", refused)
	clones := []string{"ra-1", "ra-2", "rb"}
	for _, c := range clones {
		if vm := in.inspect(c); vm.State != model.StateRunning {
			t.Fatalf("clone %s is %s (%s)", c, vm.State, vm.StateReason)
		}
		in.ok("banger", "vm", "exec", c, "--", "true")
	}
	if !removed {
		snapRaceAfterForks(t, in, sn, clones)
	}
	for _, c := range clones {
		in.ok("banger", "vm", "exec", c, "--", "true")
	}
	before := snapHostState(t, in)
	if _, errOut, code := in.run("banger", "vm", "fork", "racy", "--name", "late"); code == 0 || !strings.Contains(errOut, "neither a snapshot nor a vm") {
		t.Fatalf("fork of a removed snapshot: code %d %q", code, errOut)
	}
	if after := snapHostState(t, in); after != before {
		t.Fatalf("a refused fork changed the host:\n%s\n%s", before, after)
	}
}

// snapRaceAfterForks: the raced snapshot is intact, lists the clones, is
// in use without --force and goes with it.
func snapRaceAfterForks(t *testing.T, in *instance, sn model.Snapshot, clones []string) {
	t.Helper()
	got := snapSnapshot(t, in, "racy")
	users := slices.Clone(got.Users)
	slices.Sort(users)
	if !slices.Equal(users, clones) {
		t.Fatalf("snapshot users %v, want %v", users, clones)
	}
	if sum := fileSHA256(t, filepath.Join(sn.Dir, "state")); sum != sn.StateSHA {
		t.Fatalf("state file changed under the race: sha256 %s, recorded %s", sum, sn.StateSHA)
	}
	// Without --force it is in use; with it, removed, clones untouched.
	if _, errOut, code := in.run("banger", "snapshot", "rm", "racy"); code == 0 || !strings.Contains(errOut, "in use") {
		t.Fatalf("snapshot rm of a snapshot with clones: code %d %q", code, errOut)
	}
	in.ok("banger", "snapshot", "rm", "racy", "--force")
	if _, err := os.Stat(sn.Dir); !os.IsNotExist(err) {
		t.Fatalf("removed snapshot's dir: %v", err)
	}
}

func fileSHA256(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
