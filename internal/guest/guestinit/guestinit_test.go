package guestinit

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/guest/guestconfig"
	"github.com/bangerdev/banger/internal/model"
)

func cfg() *guestconfig.Config {
	return &guestconfig.Config{
		VMName: "vm1", Hostname: "vm1.example", BootID: "b-1", InitMode: model.InitFast,
		Network: &guestconfig.Network{
			Address: netip.MustParsePrefix("172.30.0.7/24"), Gateway: netip.MustParseAddr("172.30.0.1"),
			DNS: []netip.Addr{netip.MustParseAddr("172.30.0.1"), netip.MustParseAddr("9.9.9.9")}, MAC: "52:54:00:00:00:07",
		},
		AuthorizedKeys: []string{"ssh-ed25519 AAAA one", "ssh-rsa BBBB two"},
		Agent:          guestconfig.Agent{Transport: model.TransportVirtioSerial, PortName: "banger.agent"},
	}
}

// fakeSys makes a /sys/block + /dev pair with the given disks; content nil
// means the disk is not a config disk.
func fakeSys(t *testing.T, disks map[string][]byte) sysfs {
	t.Helper()
	root := t.TempDir()
	s := sysfs{sysRoot: filepath.Join(root, "sys"), devRoot: filepath.Join(root, "dev")}
	for _, d := range []string{filepath.Join(s.sysRoot, "block"), s.devRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range disks {
		if err := os.MkdirAll(filepath.Join(s.sysRoot, "block", name), 0o755); err != nil {
			t.Fatal(err)
		}
		if content == nil {
			content = make([]byte, 4096)
		}
		if err := os.WriteFile(filepath.Join(s.devRoot, name), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func TestFindDisks(t *testing.T) {
	disk, err := guestconfig.Encode(cfg())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name         string
		disks        map[string][]byte
		config, root string
		err          error
	}{
		{"root first", map[string][]byte{"vda": nil, "vdb": disk}, "vdb", "vda", nil},
		{"config first", map[string][]byte{"vda": disk, "vdb": nil, "vdc": nil}, "vda", "vdb", nil},
		{"naming order vdz before vdaa", map[string][]byte{"vdaa": nil, "vdz": nil, "vdb": disk}, "vdb", "vdz", nil},
		{"two config disks: first wins", map[string][]byte{"vda": nil, "vdb": disk, "vdc": disk}, "vdb", "vda", nil},
		{"no config", map[string][]byte{"vda": nil, "vdb": nil}, "", "", ErrNoConfigDisk},
		{"no root", map[string][]byte{"vda": disk}, "", "", ErrNoRootDisk},
		{"sda ignored", map[string][]byte{"sda": nil, "vda": disk}, "", "", ErrNoRootDisk},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := fakeSys(t, tc.disks)
			got, err := s.findDisks()
			if !errors.Is(err, tc.err) {
				t.Fatalf("findDisks err = %v, want %v", err, tc.err)
			}
			if tc.err != nil {
				return
			}
			if got.config != filepath.Join(s.devRoot, tc.config) || got.root != filepath.Join(s.devRoot, tc.root) {
				t.Fatalf("got config %s root %s, want %s %s", got.config, got.root, tc.config, tc.root)
			}
		})
	}
}

func TestFindDisksWaitsForLateDevice(t *testing.T) {
	disk, _ := guestconfig.Encode(cfg())
	s := fakeSys(t, map[string][]byte{"vda": nil})
	go func() {
		time.Sleep(100 * time.Millisecond)
		os.MkdirAll(filepath.Join(s.sysRoot, "block", "vdb"), 0o755)
		os.WriteFile(filepath.Join(s.devRoot, "vdb"), disk, 0o644)
	}()
	d, err := poll(5*time.Second, 10*time.Millisecond, s.findDisks)
	if err != nil || !strings.HasSuffix(d.config, "vdb") {
		t.Fatalf("poll(findDisks) = %+v, %v", d, err)
	}
}

func TestVirtioPortOpener(t *testing.T) {
	root := t.TempDir()
	s := sysfs{sysRoot: filepath.Join(root, "sys"), devRoot: filepath.Join(root, "dev")}
	for port, name := range map[string]string{"vport0p0": "org.qemu.guest_agent.0", "vport0p1": "banger.agent", "vport0p2": ""} {
		dir := filepath.Join(s.sysRoot, "class", "virtio-ports", port)
		os.MkdirAll(dir, 0o755)
		if name != "" {
			os.WriteFile(filepath.Join(dir, "name"), []byte(name+"\n"), 0o444)
		}
	}
	os.MkdirAll(s.devRoot, 0o755)
	open := virtioPortOpener(s, "banger.agent")
	if _, err := open(); !errors.Is(err, ErrNoAgentPort) {
		t.Fatalf("open before the device node exists = %v, want ErrNoAgentPort", err)
	}
	if err := os.WriteFile(filepath.Join(s.devRoot, "vport0p1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rwc, err := open()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(rwc, "hello"); err != nil {
		t.Fatal(err)
	}
	rwc.Close()
	if b, _ := os.ReadFile(filepath.Join(s.devRoot, "vport0p1")); string(b) != "hello" {
		t.Fatalf("opener opened the wrong port: wrote %q", b)
	}
	if _, err := virtioPortOpener(s, "other")(); !errors.Is(err, ErrNoAgentPort) {
		t.Fatalf("unknown port = %v, want ErrNoAgentPort", err)
	}
}

func TestWriteIdentity(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	// Debian images may link resolv.conf elsewhere; it must become a file.
	os.Symlink("/run/systemd/resolve/stub-resolv.conf", filepath.Join(root, "etc/resolv.conf"))
	c := cfg()
	if err := writeIdentity(root, c); err != nil {
		t.Fatal(err)
	}
	read := func(p string) string { b, _ := os.ReadFile(filepath.Join(root, p)); return string(b) }
	if got := read("etc/hostname"); got != "vm1.example\n" {
		t.Errorf("hostname %q", got)
	}
	if got := read("etc/hosts"); !strings.Contains(got, "172.30.0.7\tvm1.example vm1\n") || !strings.Contains(got, "127.0.0.1\tlocalhost") {
		t.Errorf("hosts:\n%s", got)
	}
	if fi, err := os.Lstat(filepath.Join(root, "etc/resolv.conf")); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("resolv.conf is not a regular file: %v", err)
	}
	if got := read("etc/resolv.conf"); got != "nameserver 172.30.0.1\nnameserver 9.9.9.9\n" {
		t.Errorf("resolv.conf %q", got)
	}

	c.Network = nil
	if err := writeIdentity(root, c); err != nil {
		t.Fatal(err)
	}
	if got := read("etc/hosts"); !strings.Contains(got, "127.0.1.1\tvm1.example") {
		t.Errorf("hosts without network:\n%s", got)
	}
}

func TestWriteAuthorizedKeys(t *testing.T) {
	root := t.TempDir()
	if err := writeAuthorizedKeys(root, cfg().AuthorizedKeys); err != nil {
		t.Fatal(err)
	}
	dir, _ := os.Stat(filepath.Join(root, "root/.ssh"))
	file, _ := os.Stat(filepath.Join(root, "root/.ssh/authorized_keys"))
	if dir == nil || file == nil || dir.Mode().Perm() != 0o700 || file.Mode().Perm() != 0o600 {
		t.Fatalf("modes: dir %v file %v, want 0700 0600", dir, file)
	}
	b, _ := os.ReadFile(filepath.Join(root, "root/.ssh/authorized_keys"))
	if string(b) != "ssh-ed25519 AAAA one\nssh-rsa BBBB two\n" {
		t.Fatalf("authorized_keys %q", b)
	}
	if err := writeAuthorizedKeys(root, nil); err != nil {
		t.Fatal(err)
	}
	if b2, _ := os.ReadFile(filepath.Join(root, "root/.ssh/authorized_keys")); string(b2) != string(b) {
		t.Fatal("no keys must leave the file alone")
	}
}

func TestAgentArgsAndUnit(t *testing.T) {
	c := cfg()
	got := strings.Join(AgentArgs(c, "v1"), " ")
	if got != "serve --boot-id b-1 --transport virtio-serial --init-mode fast --port-name banger.agent" {
		t.Fatalf("virtio-serial args %q", got)
	}
	c.Agent = guestconfig.Agent{Transport: model.TransportVsock, VsockPort: 1024}
	c.InitMode = model.InitImage
	got = strings.Join(AgentArgs(c, "v1"), " ")
	if got != "serve --boot-id b-1 --transport vsock --init-mode image --vsock-port 1024" {
		t.Fatalf("vsock args %q", got)
	}
	unit := agentUnit(imageAgentPath, AgentArgs(c, "v1"))
	if !strings.Contains(unit, "ExecStart="+imageAgentPath+" serve --boot-id b-1") || !strings.Contains(unit, "WantedBy=multi-user.target") {
		t.Fatalf("unit:\n%s", unit)
	}
}

// The reaper and supervisor run for real here: the test process plays PID 1
// for its own children.
func TestReaperRun(t *testing.T) {
	r := newReaper()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				r.reap()
			}
		}
	}()
	if err := r.run(t.Context(), exec.Command("true")); err != nil {
		t.Fatalf("true: %v", err)
	}
	if err := r.run(t.Context(), exec.Command("sh", "-c", "exit 3")); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("exit 3: %v", err)
	}
}

func TestSupervisorRestartsAndStops(t *testing.T) {
	r := newReaper()
	stopReap := make(chan struct{})
	defer close(stopReap)
	go func() {
		for {
			select {
			case <-stopReap:
				return
			case <-time.After(5 * time.Millisecond):
				r.reap()
			}
		}
	}()
	counter := filepath.Join(t.TempDir(), "starts")
	s, err := startSupervisor("flaky", r, slog.New(slog.DiscardHandler), func() *exec.Cmd {
		return exec.Command("sh", "-c", "echo x >> "+counter)
	})
	if err != nil {
		t.Fatal(err)
	}
	starts, err := poll(10*time.Second, 20*time.Millisecond, func() (int, error) {
		b, _ := os.ReadFile(counter)
		if n := strings.Count(string(b), "x"); n >= 3 {
			return n, nil
		}
		return 0, errors.New("fewer than 3 starts")
	})
	if err != nil {
		t.Fatalf("child not restarted: %v", err)
	}
	s.stop(2 * time.Second)
	select {
	case <-s.done:
	default:
		t.Fatal("supervisor still running after stop")
	}
	b, _ := os.ReadFile(counter)
	after := strings.Count(string(b), "x")
	time.Sleep(300 * time.Millisecond)
	b, _ = os.ReadFile(counter)
	if n := strings.Count(string(b), "x"); n != after {
		t.Fatalf("child restarted after stop (%d → %d starts; %d before stop)", after, n, starts)
	}
}

func TestSupervisorStopKillsLongChild(t *testing.T) {
	r := newReaper()
	stopReap := make(chan struct{})
	defer close(stopReap)
	go func() {
		for {
			select {
			case <-stopReap:
				return
			case <-time.After(5 * time.Millisecond):
				r.reap()
			}
		}
	}()
	s, err := startSupervisor("sleeper", r, slog.New(slog.DiscardHandler), func() *exec.Cmd {
		return exec.Command("sleep", "60")
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s.stop(2 * time.Second)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("stop took %s: SIGTERM did not end sleep", d)
	}
	if err := unix.Kill(s.cmd.Process.Pid, 0); !errors.Is(err, unix.ESRCH) {
		t.Fatal("child still alive after stop")
	}
}
