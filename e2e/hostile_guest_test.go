package e2e

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/testutil"
)

// A guest is hostile: root in it makes special files for `vm cp`, names a
// listening process after terminal escapes and writes escapes to its
// console. The host must get no set-uid bit, device or fifo, nothing
// outside the copy's destination may change, and no human output may
// carry a raw control byte (while --json keeps the exact strings and
// `vm logs --raw` the exact bytes).

// hostileGuestOSC52 writes "pwned" to the clipboard of a terminal that
// shows it raw; the console form clears the screen too.
const (
	hostileGuestOSC52   = "\x1b]52;c;cHduZWQ=\a"
	hostileGuestConsole = hostileGuestOSC52 + "\x1b[2Jhostile-console"
)

// hostileGuestSetup runs as root in the guest.
const hostileGuestSetup = `set -e
mkdir -p /root/out/sub
echo secret > /root/out/suid && chmod 4755 /root/out/suid
echo group > /root/out/sgid && chmod 2755 /root/out/sgid
chmod 3777 /root/out/sub
mkfifo /root/out/fifo
mknod /root/out/null c 1 3
mknod /root/out/loop b 7 0
ln -s /etc/shadow /root/out/abs-link
ln -s ../../sentinel /root/out/rel-link
ln /root/out/suid /root/out/hard
chmod 0777 /root/out
ls -l /root/out`

// hostileGuestListener forks a perl listener on 127.0.0.1:7777 whose
// process name (comm and cmdline) is an escape sequence.
const hostileGuestListener = `exit 0 if fork; POSIX::setsid();
open STDIN, "</dev/null"; open STDOUT, ">/dev/null"; open STDERR, ">/dev/null";
$0 = "\e]52;c;cHduZWQ=\a\e[2Jevil";
my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 7777, Listen => 5, ReuseAddr => 1) or die;
sleep 600;`

// hostileGuestControl reports a byte or rune a terminal acts on, newline
// and tab aside (CR included: it overwrites a line).
func hostileGuestControl(s string) bool {
	for _, r := range s {
		if (r < 0x20 && r != '\n' && r != '\t') || (r >= 0x7f && r <= 0x9f) {
			return true
		}
	}
	return false
}

// hostileGuestState maps each path under dir to type, mode, owner and
// content hash (directory times aside).
func hostileGuestState(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestHostileGuest(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	in.startVM("hostile")

	t.Run("cp", func(t *testing.T) { hostileGuestCopy(t, in) })
	t.Run("ports", func(t *testing.T) { hostileGuestPorts(t, in) })
	t.Run("logs", func(t *testing.T) { hostileGuestLogs(t, in) })
}

func hostileGuestCopy(t *testing.T, in *instance) {
	in.ok("banger", "vm", "exec", "hostile", "--", "sh", "-c", hostileGuestSetup)

	parent := t.TempDir()
	sentinel := filepath.Join(parent, "sentinel")
	dest := filepath.Join(parent, "dest")
	if err := os.MkdirAll(filepath.Join(dest, "out"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dest, "out"), 0o750); err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]os.FileMode{sentinel: 0o600, filepath.Join(dest, ".bashrc"): 0o644, filepath.Join(dest, "out", "keep"): 0o640} {
		if err := os.WriteFile(p, []byte("sentinel "+p), mode); err != nil {
			t.Fatal(err)
		}
	}
	before := hostileGuestState(t, parent)

	in.ok("banger", "vm", "cp", "hostile:/root/out", dest)

	after := hostileGuestState(t, parent)
	for p, d := range before {
		if after[p] != d {
			t.Errorf("%s changed: %q → %q", p, d, after[p])
		}
	}
	for p, d := range after {
		if _, ok := before[p]; !ok && !strings.HasPrefix(p, "dest/out/") {
			t.Errorf("%s appeared outside dest/out: %q", p, d)
		}
	}
	if st, err := os.Stat(filepath.Join(dest, "out")); err != nil || st.Mode() != fs.ModeDir|0o750 {
		t.Errorf("existing dest/out: %v %v, want its mode 0750 kept (the guest's is 0777)", st.Mode(), err)
	}
	// Nothing special anywhere: the guest's set-uid file would be owned by
	// the host user (root here).
	_ = filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			t.Error(err)
			return nil
		}
		if fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky|fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0 {
			t.Errorf("%s came to the host as %v", p, fi.Mode())
		}
		return nil
	})
	for name, want := range map[string]fs.FileMode{"suid": 0o755, "sgid": 0o755, "hard": 0o755, "sub": fs.ModeDir | 0o777} {
		if st, err := os.Lstat(filepath.Join(dest, "out", name)); err != nil || st.Mode() != want {
			t.Errorf("out/%s: %v %v, want %v", name, st.Mode(), err, want)
		}
	}
	for name, target := range map[string]string{"abs-link": "/etc/shadow", "rel-link": "../../sentinel"} {
		if got, err := os.Readlink(filepath.Join(dest, "out", name)); err != nil || got != target {
			t.Errorf("out/%s: link %q %v, want %q kept as a link", name, got, err, target)
		}
	}
	for _, name := range []string{"fifo", "null", "loop"} {
		if _, err := os.Lstat(filepath.Join(dest, "out", name)); err == nil {
			t.Errorf("out/%s was copied to the host", name)
		}
	}
}

func hostileGuestPorts(t *testing.T, in *instance) {
	in.ok("banger", "vm", "exec", "hostile", "--", "perl", "-MIO::Socket::INET", "-MPOSIX", "-e", hostileGuestListener)
	var raw string
	var p *api.Port
	for i := 0; i < 80 && p == nil; i++ { // 20 s at most
		raw = in.ok("banger", "vm", "ports", "hostile", "--json")
		p = findPort(portsOf(t, raw), 7777)
		if p == nil {
			time.Sleep(250 * time.Millisecond)
		}
	}
	if p == nil {
		t.Fatalf("the hostile listener on 7777 never showed up:\n%s", raw)
	}
	// JSON keeps the exact strings, escaped: the output itself is inert.
	if hostileGuestControl(raw) {
		t.Errorf("vm ports --json carries raw control bytes: %q", raw)
	}
	if !strings.Contains(p.Command+strings.Join(p.Cmdline, " "), hostileGuestOSC52) {
		t.Errorf("json lost the guest's exact process name: command %q cmdline %q", p.Command, p.Cmdline)
	}
	table := in.ok("banger", "vm", "ports", "hostile")
	if hostileGuestControl(table) {
		t.Errorf("vm ports table carries raw control bytes: %q", table)
	}
	if !strings.Contains(table, `\x1b]52;c;cHduZWQ=`) {
		t.Errorf("vm ports table does not show the escaped name:\n%s", table)
	}
}

func hostileGuestLogs(t *testing.T, in *instance) {
	in.ok("banger", "vm", "exec", "hostile", "--", "sh", "-c",
		`printf '\033]52;c;cHduZWQ=\007\033[2Jhostile-console\n' > /dev/console`)
	var raw string
	for i := 0; i < 40 && !strings.Contains(raw, "hostile-console"); i++ { // 10 s at most
		raw = in.ok("banger", "vm", "logs", "--raw", "hostile")
		if !strings.Contains(raw, "hostile-console") {
			time.Sleep(250 * time.Millisecond)
		}
	}
	if !strings.Contains(raw, hostileGuestConsole) {
		t.Fatalf("vm logs --raw lacks the console's exact bytes %q:\n%q", hostileGuestConsole, raw)
	}
	out := in.ok("banger", "vm", "logs", "hostile")
	if hostileGuestControl(out) {
		i := strings.IndexFunc(out, func(r rune) bool { return r < 0x20 && r != '\n' && r != '\t' })
		t.Errorf("vm logs carries raw control bytes, first at %d: %q", i, out[max(0, i-40):min(len(out), i+40)])
	}
	if !strings.Contains(out, `\x1b]52;c;cHduZWQ=\x07\x1b[2Jhostile-console`) {
		t.Errorf("vm logs does not show the escaped sequence")
	}
}
