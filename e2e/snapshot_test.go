package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/testutil"
)

// snapIdentityScript prints, one per line: the MAC of the one non-lo
// interface, its IPv4 address, the host name, /etc/machine-id, the ed25519
// host key, a fresh kernel uuid and the first 32 bytes of /dev/urandom.
const snapIdentityScript = `for i in /sys/class/net/*; do [ "${i##*/}" = lo ] || cat "$i/address"; done
ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1
hostname
cat /etc/machine-id; echo
cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub
cat /proc/sys/kernel/random/uuid
head -c32 /dev/urandom | od -An -tx1 | tr -d ' \n'; echo`

var snapFields = []string{"mac", "ip", "hostname", "machine-id", "ssh host key", "random uuid", "urandom"}

// snapIdentity reads a running VM's identity through the agent.
func snapIdentity(t *testing.T, in *instance, vm string) []string {
	t.Helper()
	out := strings.TrimSpace(in.ok("banger", "vm", "exec", vm, "--", "sh", "-c", snapIdentityScript))
	var f []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			f = append(f, l)
		}
	}
	if len(f) != len(snapFields) {
		t.Fatalf("identity of %s: %d lines, want %d: %q", vm, len(f), len(snapFields), out)
	}
	return f
}

// snapSnapshot reads one snapshot's record.
func snapSnapshot(t *testing.T, in *instance, name string) model.Snapshot {
	t.Helper()
	var sn model.Snapshot
	if err := json.Unmarshal([]byte(in.ok("banger", "snapshot", "inspect", name, "--json")), &sn); err != nil {
		t.Fatal(err)
	}
	return sn
}

// TestSnapshotForkClones forks three clones from a running VM's snapshot:
// each has its own MAC, address, host name, machine-id, SSH host key,
// kernel uuid and urandom bytes; each is reachable by its DNS name and by
// ssh against the host key pinned from its agent; the parent runs on; a
// file written in one is seen by none of the others; the snapshot cannot
// be removed while they exist.
func TestSnapshotForkClones(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	in.ok("banger", "vm", "create", "--start", "--name", "origin", "--memory", "512M", "--network", "shared")
	// The image ships an empty machine-id: give the parent one, which a
	// clone must not keep.
	in.ok("banger", "vm", "exec", "origin", "--", "sh", "-c",
		"echo before > /root/before.txt && head -c16 /dev/urandom | od -An -tx1 | tr -d ' \n' > /etc/machine-id")
	in.ok("banger", "vm", "snapshot", "origin", "--as", "base")
	sn := snapSnapshot(t, in, "base")
	if sn.SourceVM != "origin" || sn.Image != "debian-bookworm" || sn.Kernel != "debian-cloud" || sn.VMM != "qemu" ||
		sn.MemoryMiB != 512 || sn.StateBytes <= 0 || len(sn.StateSHA) != 64 || sn.Kind != model.SnapshotKindSnapshot {
		t.Fatalf("snapshot record: %+v", sn)
	}
	for _, f := range []string{"state", "root.ext4"} {
		if st, err := os.Stat(filepath.Join(sn.Dir, f)); err != nil || st.Mode().Perm() != 0o400 {
			t.Fatalf("snapshot file %s: %v (want a 0400 file)", f, err)
		}
	}
	if ls := in.ok("banger", "snapshot", "ls"); !strings.Contains(ls, "base") || !strings.Contains(ls, "debian-bookworm") || !strings.Contains(ls, "debian-cloud") {
		t.Fatalf("snapshot ls:\n%s", ls)
	}
	// The parent runs on after its snapshot, and thawed: it can write.
	in.ok("banger", "vm", "exec", "origin", "--", "sh", "-c", "echo after > /root/after.txt && sync")

	begin := time.Now()
	in.ok("banger", "vm", "fork", "base", "--name", "clone", "--count", "3")
	t.Logf("3 clones forked in %s", time.Since(begin).Round(time.Millisecond))
	vms := []string{"origin", "clone-1", "clone-2", "clone-3"}
	ids := map[string][]string{}
	for _, vm := range vms {
		ids[vm] = snapIdentity(t, in, vm)
		t.Logf("%s: %q", vm, ids[vm])
	}
	for i, field := range snapFields {
		seen := map[string]string{}
		for _, vm := range vms {
			v := ids[vm][i]
			if other, dup := seen[v]; dup {
				t.Errorf("%s and %s share their %s %q", other, vm, field, v)
			}
			seen[v] = vm
		}
	}
	for _, vm := range vms[1:] {
		rec := in.inspect(vm)
		if !strings.EqualFold(ids[vm][0], rec.MAC) || ids[vm][1] != rec.IP || ids[vm][2] != vm {
			t.Errorf("%s: guest has mac %s ip %s hostname %s, the host leased mac %s ip %s", vm, ids[vm][0], ids[vm][1], ids[vm][2], rec.MAC, rec.IP)
		}
		// The clone's disk is its own copy of the snapshot's: the file the
		// parent wrote before the snapshot is there.
		if got := strings.TrimSpace(in.ok("banger", "vm", "exec", vm, "--", "cat", "/root/before.txt")); got != "before" {
			t.Errorf("%s: /root/before.txt = %q", vm, got)
		}
		// Reachable by name through the helper's DNS, and by ssh against
		// the host key pinned from its agent's answer (strict checking).
		waitFor(t, 15*time.Second, vm+".banger resolves", func() (bool, string) {
			ips, rcode, err := resolveA(vm + ".banger")
			return err == nil && len(ips) == 1 && ips[0] == rec.IP, fmt.Sprintf("%v rcode %d %v", ips, rcode, err)
		})
		if b := readBanner(t, net.JoinHostPort(rec.IP, "22")); !strings.HasPrefix(b, "SSH-2.0-") {
			t.Errorf("%s: ssh banner %q", vm, b)
		}
		if out := strings.TrimSpace(in.ok("banger", "vm", "ssh", vm, "--", "hostname")); out != vm {
			t.Errorf("banger vm ssh %s -- hostname = %q", vm, out)
		}
	}
	// Writes stay in the VM that made them.
	in.ok("banger", "vm", "exec", "clone-1", "--", "sh", "-c", "echo mine > /root/clone-1.txt && sync")
	for _, vm := range []string{"origin", "clone-2", "clone-3"} {
		if out, _, code := in.run("banger", "vm", "exec", vm, "--", "test", "-e", "/root/clone-1.txt"); code == 0 {
			t.Errorf("%s sees clone-1's file (%q)", vm, out)
		}
	}
	for _, vm := range vms[1:] {
		if _, _, code := in.run("banger", "vm", "exec", vm, "--", "test", "-e", "/root/after.txt"); code == 0 {
			t.Errorf("%s sees the file origin wrote after the snapshot", vm)
		}
	}
	// Shared network: the clones reach each other and the parent by name.
	for _, peer := range []string{"clone-3", "origin"} {
		out := in.ok("banger", "vm", "exec", "clone-2", "--", "timeout", "20", "bash", "-c",
			"exec 3<>/dev/tcp/"+peer+".banger/22 && head -c8 <&3")
		if out != "SSH-2.0-" {
			t.Errorf("clone-2 → %s.banger:22 read %q, want an ssh banner", peer, out)
		}
	}

	// In use: refused, nothing removed.
	_, errOut, code := in.run("banger", "snapshot", "rm", "base")
	if code == 0 || !strings.Contains(errOut, "in use") || !strings.Contains(errOut, "clone-1") {
		t.Fatalf("snapshot rm of a snapshot in use: exit %d, %q", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(sn.Dir, "state")); err != nil {
		t.Fatalf("a refused rm removed the state: %v", err)
	}
	if got := snapSnapshot(t, in, "base"); len(got.Users) != 3 {
		t.Fatalf("snapshot users after a refused rm: %v", got.Users)
	}
	in.ok("banger", "vm", "rm", "-f", "clone-1", "clone-2", "clone-3")
	in.ok("banger", "snapshot", "rm", "base")
	if _, err := os.Stat(sn.Dir); !os.IsNotExist(err) {
		t.Fatalf("snapshot dir left after rm: %v", err)
	}
	// Forking a running VM snapshots it first (it runs on).
	in.ok("banger", "vm", "fork", "origin", "--name", "direct")
	if out := strings.TrimSpace(in.ok("banger", "vm", "exec", "direct", "--", "sh", "-c", "hostname; cat /root/after.txt")); out != "direct\nafter" {
		t.Fatalf("vm fork origin: %q, want the clone's own name and origin's latest file", out)
	}
	var all []model.Snapshot
	if err := json.Unmarshal([]byte(in.ok("banger", "snapshot", "ls", "--json")), &all); err != nil || len(all) != 1 ||
		!strings.HasPrefix(all[0].Name, "origin-fork-") || len(all[0].Users) != 1 || all[0].Users[0] != "direct" {
		t.Fatalf("snapshot ls after vm fork origin: %+v, %v", all, err)
	}
	in.ok("banger", "vm", "rm", "-f", "direct")
	in.ok("banger", "snapshot", "rm", all[0].Name)
	in.ok("banger", "vm", "exec", "origin", "--", "true")
}

// snapHostState is what a failed fork must not change: VM records, VM
// dirs, links (taps), this instance's qemu processes and leases (vm ls
// shows each VM's address).
func snapHostState(t *testing.T, in *instance) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "vms: %s\n", strings.TrimSpace(in.ok("banger", "vm", "ls", "--format", "{{.Name}} {{.State}} {{.IP}} {{.Image}} {{.VMM}} {{.CPUs}} {{.Memory}}")))
	fmt.Fprintf(&b, "dirs: %v\n", in.vmDirs())
	out, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	var links []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			links = append(links, f[1])
		}
	}
	sort.Strings(links)
	fmt.Fprintf(&b, "links: %v\n", links)
	var qemus []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		// Only this test's: other tests' VMs may come and go meanwhile.
		c, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(c), "qemu-system") && strings.Contains(string(c), in.p.VMsDir()) {
			qemus = append(qemus, e.Name())
		}
	}
	sort.Strings(qemus)
	fmt.Fprintf(&b, "qemu: %v\n", qemus)
	return b.String()
}

// TestSnapshotRefusesBadState: a truncated or corrupt snapshot, or one asked
// to run under another kernel or VMM, is refused with a clear error and
// nothing is made (no vm record or dir, no tap, no qemu, no lease).
func TestSnapshotRefusesBadState(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	in.ok("banger", "vm", "create", "--start", "--name", "src", "--memory", "512M")
	in.ok("banger", "vm", "snapshot", "src", "--as", "frozen", "--stop")
	if vm := in.inspect("src"); vm.State != model.StateStopped || vm.PID != 0 {
		t.Fatalf("after snapshot --stop: state %s pid %d", vm.State, vm.PID)
	}
	sn := snapSnapshot(t, in, "frozen")
	state := filepath.Join(sn.Dir, "state")
	good, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	before := snapHostState(t, in)
	refused := func(what string, want []string, args ...string) {
		t.Helper()
		_, errOut, code := in.run("banger", args...)
		if code == 0 {
			t.Fatalf("%s: accepted", what)
		}
		for _, w := range want {
			if !strings.Contains(errOut, w) {
				t.Fatalf("%s: stderr %q, want it to say %q", what, errOut, w)
			}
		}
		if after := snapHostState(t, in); after != before {
			t.Fatalf("%s changed the host:\nbefore:\n%s\nafter:\n%s", what, before, after)
		}
	}
	if err := os.WriteFile(state, good[:len(good)/2], 0o400); err != nil {
		t.Fatal(err)
	}
	refused("truncated state", []string{"truncated", "snapshot rm frozen"}, "vm", "fork", "frozen")
	bad := append([]byte(nil), good...)
	bad[len(bad)/2] ^= 0xff
	if err := os.WriteFile(state, bad, 0o400); err != nil {
		t.Fatal(err)
	}
	refused("corrupt state", []string{"corrupt", "sha256"}, "vm", "run", "--from", "frozen", "--", "true")
	if err := os.WriteFile(state, good, 0o400); err != nil {
		t.Fatal(err)
	}
	refused("another kernel", []string{"taken with kernel debian-cloud"}, "vm", "run", "--from", "frozen", "--kernel", "other", "--", "true")
	refused("another vmm", []string{"taken under qemu", "firecracker"}, "vm", "run", "--from", "frozen", "--vmm", "firecracker", "--", "true")
	refused("a snapshot of a stopped vm", []string{"only a running vm"}, "vm", "snapshot", "src")
	// The intact snapshot still forks, through vm run --from.
	if out := strings.TrimSpace(in.ok("banger", "vm", "run", "--rm", "--from", "frozen", "--name", "again", "--", "hostname")); out != "again" {
		t.Fatalf("vm run --from frozen -- hostname = %q", out)
	}
}

// TestSnapshotTemplateRun: template create boots, provisions and captures
// a VM (and removes it); vm run --template restores from it; a plain vm
// run of the same shape uses it and says so; --cold boots the image
// afresh; a failing provisioning command makes no template and leaves no VM.
func TestSnapshotTemplateRun(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	_, errOut, code := in.run("banger", "template", "create", "broken", "--memory", "512M", "--run", "echo failing-step; exit 3")
	if code == 0 || !strings.Contains(errOut, "exited with 3") || !strings.Contains(errOut, "failing-step") {
		t.Fatalf("template with a failing --run: exit %d, %q", code, errOut)
	}
	if ls := in.ok("banger", "vm", "ls"); strings.Contains(ls, "tmpl-") {
		t.Fatalf("a failed template left its vm:\n%s", ls)
	}
	if _, _, code := in.run("banger", "snapshot", "inspect", "broken"); code == 0 {
		t.Fatal("a failed template was recorded")
	}

	in.ok("banger", "template", "create", "base", "--memory", "512M", "--run", "echo provisioned > /root/prov")
	sn := snapSnapshot(t, in, "base")
	if sn.Kind != model.SnapshotKindTemplate || sn.Image != "debian-bookworm" || sn.MemoryMiB != 512 {
		t.Fatalf("template record: %+v", sn)
	}
	if ls := in.ok("banger", "vm", "ls"); strings.Contains(ls, "tmpl-") {
		t.Fatalf("template create left its vm:\n%s", ls)
	}
	if out := in.ok("banger", "vm", "run", "--rm", "--template", "base", "--name", "t1", "--", "sh", "-c", "cat /root/prov; hostname"); out != "provisioned\nt1\n" {
		t.Fatalf("vm run --template base: %q", out)
	}
	out, errOut, code := in.run("banger", "vm", "run", "--rm", "--memory", "512M", "--name", "t2", "--", "cat", "/root/prov")
	if code != 0 || out != "provisioned\n" || !strings.Contains(errOut, "using template base") {
		t.Fatalf("vm run of the template's shape: exit %d, stdout %q, stderr %q (want it restored from template base, saying so)", code, out, errOut)
	}
	out, errOut, code = in.run("banger", "vm", "run", "--rm", "--cold", "--memory", "512M", "--name", "t3", "--", "test", "-e", "/root/prov")
	if code != 1 || strings.Contains(errOut, "using template") {
		t.Fatalf("vm run --cold: exit %d, stdout %q, stderr %q (want a fresh boot without the provisioned file)", code, out, errOut)
	}
	// Another shape does not match.
	if _, errOut, _ := in.run("banger", "vm", "run", "--rm", "--memory", "384M", "--name", "t4", "--", "true"); strings.Contains(errOut, "using template") {
		t.Fatalf("vm run --memory 384M used the 512M template: %q", errOut)
	}
	if _, errOut, code := in.run("banger", "vm", "run", "--template", "nope", "--", "true"); code == 0 || !strings.Contains(errOut, "not found") {
		t.Fatalf("vm run --template nope: exit %d, %q", code, errOut)
	}
	in.ok("banger", "snapshot", "rm", "base")
}
