package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/testutil"
)

// TestSnapshotSharedMemory: a snapshot taken with --stop keeps the guest's
// RAM in a file of its own (0600: it may hold the guest's secrets); each
// clone's QEMU maps it copy-on-write; clones that write their memory
// never change the file; a clone suspends (its whole RAM into its own
// state) and resumes like any VM.
func TestSnapshotSharedMemory(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	in.ok("banger", "vm", "create", "--start", "--name", "src", "--memory", "256M", "--cpus", "1")
	in.ok("banger", "vm", "snapshot", "src", "--as", "mem", "--stop")
	sn := snapSnapshot(t, in, "mem")
	ram := filepath.Join(sn.Dir, "ram")
	if st, err := os.Stat(ram); err != nil || st.Mode().Perm() != 0o600 || sn.MemoryBytes != 256<<20 || len(sn.MemorySHA) != 64 {
		t.Fatalf("snapshot memory file: %v (record: %d bytes, sha %q; daemon log:\n%s)", err, sn.MemoryBytes, sn.MemorySHA, readFile(in.p.DaemonLog()))
	}
	if sn.StateBytes > 16<<20 {
		t.Fatalf("state file is %d bytes: it still holds the memory", sn.StateBytes)
	}
	in.ok("banger", "vm", "fork", "mem", "--name", "m", "--count", "2")
	for _, vm := range []string{"m-1", "m-2"} {
		// Dirty a good part of the clone's memory.
		in.ok("banger", "vm", "exec", vm, "--", "sh", "-c", "head -c 48M /dev/urandom > /dev/shm/fill && hostname")
		if maps := readFile(fmt.Sprintf("/proc/%d/maps", in.inspect(vm).PID)); !strings.Contains(maps, ram) {
			t.Fatalf("%s's qemu does not map the snapshot's memory file", vm)
		}
	}
	if sum := fileSHA256(t, ram); sum != sn.MemorySHA {
		t.Fatalf("the clones changed the snapshot's memory file: sha256 %s, recorded %s", sum, sn.MemorySHA)
	}
	in.ok("banger", "vm", "suspend", "m-1")
	in.ok("banger", "vm", "resume", "m-1")
	if out := strings.TrimSpace(in.ok("banger", "vm", "exec", "m-1", "--", "sh", "-c", "hostname; wc -c < /dev/shm/fill")); out != "m-1\n50331648" {
		t.Fatalf("m-1 after suspend and resume: %q", out)
	}
	// A corrupt memory file is refused before anything is made.
	in.ok("banger", "vm", "rm", "-f", "m-1", "m-2")
	f, err := os.OpenFile(ram, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xde, 0xad}, 4096*100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	before := snapHostState(t, in)
	if _, errOut, code := in.run("banger", "vm", "fork", "mem", "--name", "bad"); code == 0 || !strings.Contains(errOut, "memory file") || !strings.Contains(errOut, "corrupt") {
		t.Fatalf("fork of a corrupt memory file: code %d %q", code, errOut)
	}
	if after := snapHostState(t, in); after != before {
		t.Fatalf("a refused fork changed the host:\n%s\n%s", before, after)
	}
}
