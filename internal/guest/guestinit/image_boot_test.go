package guestinit_test

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentclient"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/guest/guestconfig"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/testutil"
)

// TestBootImageModeHandsOverToSystemd boots the systemd image in image
// mode: banger-init applies the network and execs systemd, systemd starts
// the agent service (found through /sys, no udev links needed) and sshd
// (host keys made by banger-init), the address set before the hand-over
// still answers, and a power-off through the agent ends QEMU.
func TestBootImageModeHandsOverToSystemd(t *testing.T) {
	testutil.RequireQEMU(t)
	testutil.Kernel(t)
	image := testutil.SystemdImage(t)
	if !testutil.InNetNS(t) {
		return
	}
	for _, c := range [][]string{
		{"link", "add", "br0", "type", "bridge"},
		{"addr", "add", "10.78.0.1/24", "dev", "br0"},
		{"link", "set", "br0", "up"},
		{"tuntap", "add", "tap0", "mode", "tap"},
		{"link", "set", "tap0", "master", "br0"},
		{"link", "set", "tap0", "up"},
	} {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", c, err, out)
		}
	}
	cfg := testConfig()
	cfg.InitMode = model.InitImage
	cfg.Network = &guestconfig.Network{
		Address: netip.MustParsePrefix("10.78.0.2/24"),
		Gateway: netip.MustParseAddr("10.78.0.1"),
		DNS:     []netip.Addr{netip.MustParseAddr("10.78.0.1")},
		MAC:     "52:54:00:78:00:02",
	}
	v := startVMWithImage(t, image, cfg, nil,
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-device", "virtio-net-device,netdev=n0,mac="+cfg.Network.MAC)
	start := time.Now()
	if _, err := v.waitConsole(t, "banger-init: handing over to /sbin/init", bootTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("hand-over %s after qemu start", time.Since(start).Round(time.Millisecond))

	// The agent, now a systemd service, answers with this boot's id.
	dialer := agentclient.NewYamuxDialer(filepath.Join(v.dir, "agent.sock"), nil)
	defer dialer.Close()
	client := agentclient.NewClient(dialer.Dial, nil)
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	var h agentproto.Health
	for {
		hctx, hcancel := context.WithTimeout(ctx, 20*time.Second)
		var err error
		h, err = client.Health(hctx)
		hcancel()
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("agent never answered under systemd: %v", err)
		case <-v.exited:
			t.Fatalf("qemu exited before the agent answered: %v", v.waitErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if h.BootID != cfg.BootID {
		t.Fatalf("agent health %+v, want boot id %s", h, cfg.BootID)
	}
	t.Logf("agent answered %s after qemu start", time.Since(start).Round(time.Millisecond))

	// sshd (systemd's ssh.service) answers on the address banger-init set.
	deadline := time.Now().Add(bootTimeout)
	for {
		conn, err := net.DialTimeout("tcp", "10.78.0.2:22", 2*time.Second)
		if err == nil {
			banner := make([]byte, 64)
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, _ := conn.Read(banner)
			conn.Close()
			if !strings.HasPrefix(string(banner[:n]), "SSH-2.0-") {
				t.Fatalf("10.78.0.2:22 answered %q, not an SSH banner", banner[:n])
			}
			t.Logf("sshd answered %s after qemu start", time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest sshd unreachable on 10.78.0.2:22 under systemd: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Power-off through the agent goes through systemd's shutdown, and QEMU
	// (-no-reboot) exits on its own.
	// Its own deadline: the boot's may be nearly spent on a loaded host.
	start = time.Now()
	pctx, pcancel := context.WithTimeout(context.Background(), time.Minute)
	defer pcancel()
	if err := client.Poweroff(pctx); err != nil {
		t.Fatalf("agent poweroff: %v", err)
	}
	select {
	case <-v.exited:
		t.Logf("qemu exited %s after the power-off request", time.Since(start).Round(time.Millisecond))
	case <-time.After(90 * time.Second):
		t.Fatal("qemu still running 90s after the power-off request")
	}
	console, _ := os.ReadFile(v.console)
	if bytes.Contains(console, []byte("banger-init: error:")) {
		t.Fatalf("console reports a banger-init error")
	}
	if bytes.Contains(console, []byte("banger-init: ready")) {
		t.Fatalf("image mode must not run fast mode's services (console shows ready)")
	}
	if !bytes.Contains(console, []byte("reboot: Power down")) {
		t.Fatalf("console lacks the kernel's power-down line: the guest did not power off cleanly")
	}
}
