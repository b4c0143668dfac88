package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/sshkeys"
	"github.com/bangerdev/banger/internal/testutil"
)

// startVM creates and boots one small VM.
func (in *instance) startVM(name string, flags ...string) {
	in.t.Helper()
	in.ok("banger", append([]string{"vm", "create", "--start", "--name", name, "--memory", "512M"}, flags...)...)
}

// systemSSH runs the system ssh client through banger's ssh_config include.
func systemSSH(t *testing.T, in *instance, host string, argv ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{"-F", sshkeys.FilesFor(in.p).Config, "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", host, "--"}, argv...)
	cmd := exec.CommandContext(ctx, testutil.RequireBinary(t, "ssh"), args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// regenerateHostKeys gives the guest new SSH host keys and makes sshd
// (which re-execs on SIGHUP) serve them.
const regenerateHostKeys = `rm -f /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null &&
for d in /proc/[0-9]*; do [ "$(cat $d/comm 2>/dev/null)" = sshd ] && kill -HUP ${d#/proc/}; done; true`

func TestSSHTrustOnFirstUse(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	testutil.RequireBinary(t, "ssh")
	in := vmInstance(t)
	in.startVM("tofu")
	files := sshkeys.FilesFor(in.p)

	out, errOut, code := in.run("banger", "vm", "ssh", "tofu", "--", "hostname")
	if code != 0 || strings.TrimSpace(out) != "tofu" {
		t.Fatalf("first vm ssh: exit %d, stdout %q, stderr %q\ndaemon log:\n%s", code, out, errOut, readFile(in.p.DaemonLog()))
	}
	if !strings.Contains(errOut, "trusted the host key") {
		t.Fatalf("first connection did not say it pinned the key: %q", errOut)
	}
	if st, err := os.Stat(files.Key); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("banger key %s: %v %v", files.Key, st, err)
	}
	known := readFile(files.KnownHosts)
	pinned := regexp.MustCompile(`(?m)^tofu\.banger,tofu,\S+ (ssh-ed25519 \S+)$`).FindStringSubmatch(known)
	if pinned == nil {
		t.Fatalf("known_hosts has no pinned ed25519 key for tofu:\n%s", known)
	}
	cfg := readFile(files.Config)
	if !strings.Contains(cfg, "Host tofu tofu.banger") || !strings.Contains(cfg, "StrictHostKeyChecking yes") || strings.Contains(cfg, "StrictHostKeyChecking no") {
		t.Fatalf("ssh_config include:\n%s", cfg)
	}
	// The second connection checks against the pin and says nothing.
	if _, errOut, code := in.run("banger", "vm", "ssh", "tofu", "--", "true"); code != 0 || strings.Contains(errOut, "trusted") {
		t.Fatalf("second vm ssh: exit %d, stderr %q", code, errOut)
	}
	// The system client through the generated include, by NAME.banger.
	if out, errOut, code := systemSSH(t, in, "tofu.banger", "hostname"); code != 0 || strings.TrimSpace(out) != "tofu" {
		t.Fatalf("ssh -F include tofu.banger: exit %d, %q, %q", code, out, errOut)
	}

	// New host keys in the guest: both paths must refuse.
	in.ok("banger", "vm", "exec", "tofu", "--", "sh", "-c", regenerateHostKeys)
	out, errOut, code = in.run("banger", "vm", "ssh", "tofu", "--", "hostname")
	if code == 0 || strings.Contains(out, "tofu") {
		t.Fatalf("vm ssh connected to a guest whose host key changed: exit %d, stdout %q", code, out)
	}
	for _, want := range []string{`vm "tofu" changed`, "banger vm ssh --forget-host-key tofu"} {
		if !strings.Contains(errOut, want) {
			t.Fatalf("refusal does not say %q:\n%s", want, errOut)
		}
	}
	if out, errOut, code := systemSSH(t, in, "tofu.banger", "hostname"); code == 0 || strings.Contains(out, "tofu") ||
		!strings.Contains(errOut, "IDENTIFICATION HAS CHANGED") && !strings.Contains(errOut, "verification failed") {
		t.Fatalf("system ssh through the include accepted a changed key: exit %d, %q, %q", code, out, errOut)
	}
	if got := readFile(files.KnownHosts); !strings.Contains(got, pinned[1]) {
		t.Fatal("a refused connection changed the pinned key")
	}

	// The explicit way out: forget, then pin the new key and connect.
	out, errOut, code = in.run("banger", "vm", "ssh", "--forget-host-key", "tofu", "--", "hostname")
	if code != 0 || strings.TrimSpace(out) != "tofu" {
		t.Fatalf("vm ssh --forget-host-key: exit %d, %q, %q", code, out, errOut)
	}
	if got := readFile(files.KnownHosts); strings.Contains(got, pinned[1]) || !strings.Contains(got, "tofu.banger,tofu,") {
		t.Fatalf("known_hosts after forgetting still has the old key or lacks the new one:\n%s", got)
	}
	if out, _, code := systemSSH(t, in, "tofu.banger", "hostname"); code != 0 || strings.TrimSpace(out) != "tofu" {
		t.Fatalf("system ssh after re-pinning: exit %d, %q", code, out)
	}
}

func TestExecSessionsRecorded(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	in.startVM("sess")
	in.ok("banger", "vm", "exec", "sess", "--", "true")
	if _, _, code := in.run("banger", "vm", "exec", "sess", "--", "sh", "-c", "exit 3"); code != 3 {
		t.Fatalf("exit 3 came back as %d", code)
	}
	var res api.SessionList
	if err := json.Unmarshal([]byte(in.ok("banger", "vm", "sessions", "sess", "--json")), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Sessions) != 2 {
		t.Fatalf("want 2 sessions, got %+v", res.Sessions)
	}
	for i, want := range []struct {
		cmd  string
		code int
	}{{"true", 0}, {"sh -c exit 3", 3}} {
		s := res.Sessions[i]
		if got := strings.Join(s.Command, " "); got != want.cmd || s.ExitCode == nil || *s.ExitCode != want.code ||
			s.EndedAt == nil || s.EndedAt.Before(s.StartedAt) || !strings.HasPrefix(s.OpID, "op-") {
			t.Fatalf("session %d: %+v (exit %v), want %q exit %d", i, s, s.ExitCode, want.cmd, want.code)
		}
	}
	if out := in.ok("banger", "vm", "sessions", "sess"); !strings.Contains(out, "sh -c exit 3") {
		t.Fatalf("sessions table:\n%s", out)
	}
}

// background starts a long-running banger command and returns its stdout
// lines; it is interrupted (Ctrl-C) at cleanup, and must exit cleanly.
func (in *instance) background(t *testing.T, args ...string) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "banger"), args...)
	cmd.Env = in.env()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("banger %v after Ctrl-C: %v; stderr %s", args, err, stderr.String())
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("banger %v ignored Ctrl-C for 15s", args)
		}
	})
	return cmd, lines
}

func nextLine(t *testing.T, lines <-chan string, timeout time.Duration, match func(string) bool) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("command ended before printing the expected line")
			}
			if match(l) {
				return l
			}
		case <-deadline:
			t.Fatalf("no expected line within %s", timeout)
		}
	}
}

func portsOf(t *testing.T, raw string) []api.Port {
	t.Helper()
	var l api.PortList
	if err := json.Unmarshal([]byte(raw), &l); err != nil {
		t.Fatalf("decode ports %q: %v", raw, err)
	}
	return l.Ports
}

func findPort(ports []api.Port, port int) *api.Port {
	for i := range ports {
		if ports[i].Port == port && strings.HasPrefix(ports[i].Proto, "tcp") {
			return &ports[i]
		}
	}
	return nil
}

func TestPortsAndForward(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	in.startVM("ports", "--forward-deny", "2223")
	_, watch := in.background(t, "vm", "ports", "-w", "--json", "ports")
	// sshd may still be binding when the agent first answers: the watch
	// streams the list again once it listens.
	nextLine(t, watch, 30*time.Second, func(l string) bool { return findPort(portsOf(t, l), 22) != nil })

	// A second sshd on 2222 (the image has no python): it daemonizes itself.
	in.ok("banger", "vm", "exec", "ports", "--", "/usr/sbin/sshd", "-p", "2222")
	var p *api.Port
	for i := 0; i < 40 && p == nil; i++ {
		p = findPort(portsOf(t, in.ok("banger", "vm", "ports", "ports", "--json")), 2222)
		if p == nil {
			time.Sleep(250 * time.Millisecond)
		}
	}
	if p == nil || p.PID <= 1 || p.Command != "sshd" {
		t.Fatalf("port 2222 listed as %+v, want sshd with its pid", p)
	}
	pid := strings.TrimSpace(in.ok("banger", "vm", "exec", "ports", "--", "sh", "-c", fmt.Sprintf("cat /proc/%d/comm", p.PID)))
	if pid != "sshd" {
		t.Fatalf("listed pid %d is %q in the guest", p.PID, pid)
	}
	if out := in.ok("banger", "vm", "ports", "ports"); !regexp.MustCompile(`(?m)^tcp\S*\s+\S+\s+2222\s+\d+\s+.*sshd`).MatchString(out) {
		t.Fatalf("ports table lacks 2222:\n%s", out)
	}
	nextLine(t, watch, 30*time.Second, func(l string) bool { return findPort(portsOf(t, l), 2222) != nil })

	// Policy: a loopback-only listener is labelled so; the port the VM was
	// created with --forward-deny for is labelled and vm forward refuses it,
	// naming the rule.
	in.ok("banger", "vm", "exec", "ports", "--", "/usr/sbin/sshd", "-p", "2223", "-o", "ListenAddress=127.0.0.1")
	var lo *api.Port
	for i := 0; i < 40 && lo == nil; i++ {
		lo = findPort(portsOf(t, in.ok("banger", "vm", "ports", "ports", "--json")), 2223)
		if lo == nil {
			time.Sleep(250 * time.Millisecond)
		}
	}
	if lo == nil || lo.Address != "127.0.0.1" || !slices.Equal(lo.Labels, []string{"loopback-only", "forward-denied"}) {
		t.Fatalf("port 2223 listed as %+v, want 127.0.0.1 labelled loopback-only,forward-denied", lo)
	}
	if p := findPort(portsOf(t, in.ok("banger", "vm", "ports", "ports", "--json")), 2222); p == nil || len(p.Labels) != 0 {
		t.Fatalf("port 2222 (all addresses, forwardable) listed as %+v, want no labels", p)
	}
	if out, errOut, code := in.run("banger", "vm", "forward", "ports", "2223:0"); code != 1 || strings.Contains(out, "forwarding") || !strings.Contains(errOut, "forward-deny") {
		t.Fatalf("vm forward of a denied port: exit %d, stdout %q, stderr %q; want a refusal naming forward-deny", code, out, errOut)
	}

	// Forward a local port to it: the guest's sshd banner answers on 127.0.0.1.
	_, fwd := in.background(t, "vm", "forward", "ports", "2222:0")
	line := nextLine(t, fwd, 30*time.Second, func(l string) bool { return strings.HasPrefix(l, "forwarding ") })
	addr := strings.Fields(line)[1]
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("forward listens on %q", addr)
	}
	for i := 0; i < 3; i++ { // sequential and repeated connections all work
		banner := readBanner(t, addr)
		if !strings.HasPrefix(banner, "SSH-2.0-OpenSSH") {
			t.Fatalf("connection %d through the forward read %q", i, banner)
		}
	}
	// Bytes flow both ways: the server answers our identification line.
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "SSH-2.0-bangertest\r\n"); err != nil {
		t.Fatal(err)
	}
	// The server's KEXINIT follows: packet length, padding, type 20.
	hdr := make([]byte, 6)
	if _, err := io.ReadFull(br, hdr); err != nil || hdr[5] != 20 {
		t.Fatalf("no SSH_MSG_KEXINIT after our identification: % x, %v", hdr, err)
	}
}

func readBanner(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	l, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read banner through %s: %v", addr, err)
	}
	return strings.TrimSpace(l)
}

func TestCopyBothWaysKeepsModes(t *testing.T) {
	t.Parallel() // see "Parallel tests" in main_test.go
	if !testutil.InNetNS(t) {
		return
	}
	in := vmInstance(t)
	in.startVM("copy")
	src := filepath.Join(t.TempDir(), "tree")
	mtime := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)
	files := map[string]struct {
		mode os.FileMode
		data string
	}{
		"tree/plain.txt":    {0o640, "plain\n"},
		"tree/run.sh":       {0o755, "#!/bin/sh\necho ran\n"},
		"tree/sub/secret":   {0o600, "s3cret"},
		"tree/sub/deep/big": {0o644, strings.Repeat("0123456789", 100_000)},
	}
	for name, f := range files {
		p := filepath.Join(filepath.Dir(src), name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(src, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("plain.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}

	in.ok("banger", "vm", "cp", src, "copy:/tmp/x")
	got := in.ok("banger", "vm", "exec", "copy", "--", "sh", "-c",
		"cd /tmp/x/tree && stat -c '%a %Y %n' plain.txt run.sh sub sub/secret sub/deep/big && readlink link && ./run.sh")
	for _, want := range []string{
		fmt.Sprintf("640 %d plain.txt", mtime.Unix()), fmt.Sprintf("755 %d run.sh", mtime.Unix()), "700 ",
		fmt.Sprintf("600 %d sub/secret", mtime.Unix()), "\nplain.txt\n", "ran",
	} {
		if !strings.Contains(got, want) {
			t.Fatalf("in the guest, want %q in:\n%s", want, got)
		}
	}

	back := filepath.Join(t.TempDir(), "back")
	in.ok("banger", "vm", "cp", "copy:/tmp/x/tree", back)
	for name, f := range files {
		p := filepath.Join(back, name)
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		if st.Mode().Perm() != f.mode || string(b) != f.data || !st.ModTime().Equal(mtime) {
			t.Fatalf("%s came back as mode %v mtime %v, %d bytes; want %v %v %d bytes", name, st.Mode().Perm(), st.ModTime(), len(b), f.mode, mtime, len(f.data))
		}
	}
	if st, err := os.Stat(filepath.Join(back, "tree/sub")); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("tree/sub came back as %v, %v", st, err)
	}
	if l, err := os.Readlink(filepath.Join(back, "tree/link")); err != nil || l != "plain.txt" {
		t.Fatalf("symlink came back as %q, %v", l, err)
	}
	// A missing guest path is an error, not an empty copy.
	if _, errOut, code := in.run("banger", "vm", "cp", "copy:/nonexistent", back); code == 0 || errOut == "" {
		t.Fatalf("copying a missing guest path: exit %d, stderr %q", code, errOut)
	}
	// The guest agent's not_found reaches the client as not_found, not internal.
	_, err := rpc.Invoke(context.Background(), in.client(), api.MethodVMCopy, api.VMCopy{Name: "copy", Direction: api.CopyOut, Guest: "/nonexistent", Local: filepath.Join(back, "missing")})
	if got := api.CodeOf(err); got != api.CodeNotFound {
		t.Fatalf("vm.cp of a missing guest path: code %s, want %s (err: %v)", got, api.CodeNotFound, err)
	}
	if _, serr := os.Lstat(filepath.Join(back, "missing")); !errors.Is(serr, os.ErrNotExist) {
		t.Fatalf("failed copy out left its destination behind (%v)", serr)
	}
}
