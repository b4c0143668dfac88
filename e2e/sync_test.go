package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/testutil"
)

// guestTree lists a guest directory as "path type mode sha256-or-target"
// lines, the same shape hostTree gives the host's.
const guestTreeScript = `cd "$1" && find . -mindepth 1 | LC_ALL=C sort | while read -r p; do
  p=${p#./}
  if [ -L "$p" ]; then echo "$p l $(readlink "$p")"
  elif [ -d "$p" ]; then echo "$p d"
  else echo "$p f $(stat -c %a "$p") $(sha256sum < "$p" | cut -d' ' -f1)"; fi
done`

func guestTree(t *testing.T, in *instance, vm, dir string) []string {
	t.Helper()
	out := in.ok("banger", "vm", "exec", vm, "--", "sh", "-c", guestTreeScript, "sh", dir)
	return strings.Split(strings.TrimSpace(out), "\n")
}

func hostTree(t *testing.T, dir string, skip func(rel string) bool) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		if skip != nil && skip(rel) {
			if fi.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out = append(out, rel+" l "+l)
		case fi.IsDir():
			out = append(out, rel+" d")
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			out = append(out, fmt.Sprintf("%s f %o %s", rel, fi.Mode().Perm(), hex.EncodeToString(h[:])))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func syncRound(t *testing.T, in *instance, args ...string) api.SyncResult {
	t.Helper()
	out := in.ok("banger", append([]string{"vm", "sync", "--json"}, args...)...)
	var r api.SyncResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("vm sync --json printed %q: %v", out, err)
	}
	return r
}

func writeHost(t *testing.T, p, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func sameTrees(t *testing.T, what string, host, guest []string) {
	t.Helper()
	if !slices.Equal(host, guest) {
		t.Fatalf("%s: guest tree differs from the host's\nhost:\n%s\nguest:\n%s", what, strings.Join(host, "\n"), strings.Join(guest, "\n"))
	}
}

// TestSyncIntoVM drives vm sync against a real VM: initial sync, touch,
// modify, create and delete with --delete, excludes, --watch, and a guest
// symlink that points out of the synced directory.
func TestSyncIntoVM(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	in.startVM("sync")
	host := filepath.Join(t.TempDir(), "proj")
	writeHost(t, filepath.Join(host, "README"), "hello\n", 0o644)
	writeHost(t, filepath.Join(host, "bin", "run.sh"), "#!/bin/sh\necho ran\n", 0o755)
	writeHost(t, filepath.Join(host, "src", "deep", "data.bin"), strings.Repeat("0123456789", 50_000), 0o600)
	writeHost(t, filepath.Join(host, "old.txt"), "to be deleted", 0o644)
	if err := os.Symlink("../README", filepath.Join(host, "src", "readme-link")); err != nil {
		t.Fatal(err)
	}
	const gdir = "/root/proj"

	t.Run("initial", func(t *testing.T) {
		r := syncRound(t, in, host, "sync:"+gdir)
		if r.Uploaded != 8 || r.Removed != 0 {
			t.Errorf("initial round %+v, want 8 entries sent", r)
		}
		sameTrees(t, "initial", hostTree(t, host, nil), guestTree(t, in, "sync", gdir))
		if out := in.ok("banger", "vm", "exec", "sync", "--", gdir+"/bin/run.sh"); out != "ran\n" {
			t.Errorf("synced script printed %q", out)
		}
	})

	t.Run("changes", func(t *testing.T) {
		later := time.Now().Add(time.Minute)
		if err := os.Chtimes(filepath.Join(host, "README"), later, later); err != nil { // touch only
			t.Fatal(err)
		}
		writeHost(t, filepath.Join(host, "bin", "run.sh"), "#!/bin/sh\necho RAN\n", 0o755) // same size
		writeHost(t, filepath.Join(host, "src", "new", "n.go"), "package n\n", 0o644)
		if err := os.Remove(filepath.Join(host, "old.txt")); err != nil {
			t.Fatal(err)
		}
		r := syncRound(t, in, "--delete", host, "sync:"+gdir)
		if r.Uploaded != 3 || r.Removed != 1 || r.Hashed < 1 {
			t.Errorf("change round %+v, want 3 sent (run.sh, src/new, src/new/n.go), 1 removed, README hashed", r)
		}
		sameTrees(t, "after changes", hostTree(t, host, nil), guestTree(t, in, "sync", gdir))
		r = syncRound(t, in, "--delete", host, "sync:"+gdir)
		if r.Uploaded != 0 || r.Removed != 0 {
			t.Errorf("idle round %+v, want nothing sent or removed", r)
		}
		// Nothing changed in the guest since that listing: it is not
		// listed again. A change in the guest is seen on the next round.
		if r = syncRound(t, in, "--delete", host, "sync:"+gdir); !r.CachedListing || r.Uploaded != 0 || r.Removed != 0 {
			t.Errorf("second idle round %+v, want the cached listing and nothing done", r)
		}
		in.ok("banger", "vm", "exec", "sync", "--", "sh", "-c", "echo guest > "+gdir+"/src/deep/guest-made && echo x >> "+gdir+"/README")
		if r = syncRound(t, in, "--delete", host, "sync:"+gdir); r.CachedListing || r.Removed != 1 || r.Uploaded != 1 {
			t.Errorf("round after guest changes %+v, want a full listing, guest-made removed, README sent again", r)
		}
		sameTrees(t, "after guest changes", hostTree(t, host, nil), guestTree(t, in, "sync", gdir))
	})

	t.Run("excludes", func(t *testing.T) {
		writeHost(t, filepath.Join(host, ".gitignore"), "*.log\nbuild/\n", 0o644)
		writeHost(t, filepath.Join(host, "debug.log"), "log", 0o644)
		writeHost(t, filepath.Join(host, "build", "out"), "out", 0o644)
		writeHost(t, filepath.Join(host, "node_modules", "m.js"), "m", 0o644)
		// Guest-made files under an excluded name survive --delete.
		in.ok("banger", "vm", "exec", "sync", "--", "sh", "-c", "mkdir -p "+gdir+"/node_modules && echo g > "+gdir+"/node_modules/guest.js")
		syncRound(t, in, "--delete", "--exclude", "node_modules", host, "sync:"+gdir)
		skip := func(rel string) bool {
			return strings.HasSuffix(rel, ".log") || rel == "build" || rel == "node_modules"
		}
		got := guestTree(t, in, "sync", gdir)
		want := append(hostTree(t, host, skip), "node_modules d", "node_modules/guest.js f 644 "+sha("g\n"))
		slices.Sort(want)
		sameTrees(t, "with excludes", want, got)
	})

	t.Run("attack", func(t *testing.T) {
		// The guest puts a link at GUEST_DIR/x to /etc; the host has a
		// directory x with a passwd file, and a file etc-shadow where the
		// guest has a link to /etc/shadow.
		before := in.ok("banger", "vm", "exec", "sync", "--", "sh", "-c",
			"sha256sum /etc/passwd /etc/shadow && stat -c '%a %u %h' /etc/passwd /etc/shadow")
		in.ok("banger", "vm", "exec", "sync", "--", "sh", "-c",
			"ln -s /etc "+gdir+"/x && ln -s /etc/shadow "+gdir+"/etc-shadow")
		writeHost(t, filepath.Join(host, "x", "passwd"), "owned::0:0::/:/bin/sh\n", 0o644)
		writeHost(t, filepath.Join(host, "etc-shadow"), "owned\n", 0o644)
		syncRound(t, in, "--delete", "--exclude", "node_modules", host, "sync:"+gdir)
		after := in.ok("banger", "vm", "exec", "sync", "--", "sh", "-c",
			"sha256sum /etc/passwd /etc/shadow && stat -c '%a %u %h' /etc/passwd /etc/shadow")
		if before != after {
			t.Fatalf("files outside the synced directory changed:\nbefore %s\nafter %s", before, after)
		}
		got := in.ok("banger", "vm", "exec", "sync", "--", "sh", "-c",
			"[ -d "+gdir+"/x ] && [ ! -L "+gdir+"/x ] && [ ! -L "+gdir+"/etc-shadow ] && cat "+gdir+"/x/passwd "+gdir+"/etc-shadow")
		if got != "owned::0:0::/:/bin/sh\nowned\n" {
			t.Fatalf("the links were not replaced by the host's entries: %q", got)
		}
	})

	t.Run("watch", func(t *testing.T) {
		_, lines := in.background(t, "vm", "sync", "--watch", "--delete", "--exclude", "node_modules", host, "sync:"+gdir)
		isRound := func(l string) bool { return strings.Contains(l, " synced: ") }
		nextLine(t, lines, 60*time.Second, isRound) // the first round
		check := func(what string, cond string) {
			t.Helper()
			deadline := time.Now().Add(30 * time.Second)
			for {
				nextLine(t, lines, 30*time.Second, isRound)
				_, _, code := in.run("banger", "vm", "exec", "sync", "--", "sh", "-c", cond)
				if code == 0 {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: not seen in the guest within 30s (%s)", what, cond)
				}
			}
		}
		writeHost(t, filepath.Join(host, "README"), "changed by watch\n", 0o644)
		check("change", "grep -qx 'changed by watch' "+gdir+"/README")
		writeHost(t, filepath.Join(host, "fresh", "dir", "f.txt"), "fresh\n", 0o644)
		check("create in a new directory", "grep -qx fresh "+gdir+"/fresh/dir/f.txt")
		writeHost(t, filepath.Join(host, "fresh", "dir", "g.txt"), "second\n", 0o644)
		check("create in the new directory's watch", "grep -qx second "+gdir+"/fresh/dir/g.txt")
		if err := os.RemoveAll(filepath.Join(host, "src")); err != nil {
			t.Fatal(err)
		}
		check("delete", "[ ! -e "+gdir+"/src ]")
	})
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
