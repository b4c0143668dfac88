package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/config"
)

// runBanger runs the command tree against a scratch BANGER_HOME (and any
// extra variables), returning stdout, stderr and the exit code.
func runBanger(t *testing.T, env map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	e := Env{
		Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr,
		Getenv:     func(k string) string { return env[k] },
		Executable: filepath.Join(t.TempDir(), "banger"),
	}
	code := Execute(context.Background(), e, args)
	return stdout.String(), stderr.String(), code
}

// homeWithConfig makes a BANGER_HOME whose config.toml holds text ("" = none).
func homeWithConfig(t *testing.T, text string) string {
	t.Helper()
	home := t.TempDir()
	if text != "" {
		if err := os.MkdirAll(filepath.Join(home, "config"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(home, "config", "config.toml"), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return home
}

func TestDNSSetupPrintsDropIn(t *testing.T) {
	out, errOut, code := runBanger(t, map[string]string{"BANGER_HOME": homeWithConfig(t, "")}, "dns", "setup")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := "# /etc/systemd/resolved.conf.d/banger.conf\n" +
		"# Written by banger: resolve .banger names through banger's VM DNS server.\n" +
		"[Resolve]\nDNS=10.213.77.1\nDomains=~banger\n"
	if out != want {
		t.Fatalf("dns setup printed:\n%s\nwant:\n%s", out, want)
	}
}

func TestDNSSetupFollowsConfig(t *testing.T) {
	home := homeWithConfig(t, "[network]\nsubnet = \"10.50.0.0/16\"\n[dns]\ndomain = \"vm\"\n")
	out, errOut, code := runBanger(t, map[string]string{"BANGER_HOME": home}, "dns", "setup")
	if code != 0 || !strings.Contains(out, "DNS=10.50.0.1\n") || !strings.Contains(out, "Domains=~vm\n") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// A broken config is reported, not papered over with defaults.
	home = homeWithConfig(t, "[dns]\ndomian = \"vm\"\n")
	_, errOut, code = runBanger(t, map[string]string{"BANGER_HOME": home}, "dns", "setup")
	if code == 0 || !strings.Contains(errOut, "unknown key dns.domian") {
		t.Fatalf("bad config: exit %d, stderr %q", code, errOut)
	}
}

func TestDNSSetupApplyWritesDropIn(t *testing.T) {
	root := t.TempDir()
	env := map[string]string{"BANGER_HOME": homeWithConfig(t, ""), "BANGER_SYSTEM_ROOT": root}
	out, errOut, code := runBanger(t, env, "dns", "setup", "--apply")
	if os.Geteuid() != 0 {
		if code == 0 || !strings.Contains(errOut, "must run as root") {
			t.Fatalf("--apply as non-root: exit %d, stderr %q", code, errOut)
		}
		return
	}
	if code != 0 || !strings.Contains(out, "systemctl restart systemd-resolved") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	b, err := os.ReadFile(filepath.Join(root, "etc/systemd/resolved.conf.d/banger.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "DNS=10.213.77.1\nDomains=~banger\n") {
		t.Fatalf("drop-in written: %q", b)
	}
	out, _, code = runBanger(t, env, "dns", "setup", "--apply")
	if code != 0 || !strings.Contains(out, "already up to date") {
		t.Fatalf("second --apply: exit %d, %q", code, out)
	}
}

func TestConfigShow(t *testing.T) {
	home := homeWithConfig(t, "vmm = \"qemu\"\n[network]\nbridge = \"banger7\"\n")
	out, errOut, code := runBanger(t, map[string]string{"BANGER_HOME": home}, "config", "show", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var got config.Config
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	want := config.Default()
	want.VMM, want.Network.Bridge = "qemu", "banger7"
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("config show --json: %+v, want %+v", got, want)
	}
	out, _, code = runBanger(t, map[string]string{"BANGER_HOME": home}, "config", "show")
	if code != 0 || !strings.Contains(out, "vmm = \"qemu\"") || !strings.Contains(out, "bridge = \"banger7\"") || !strings.Contains(out, "subnet = \"10.213.77.0/24\"") {
		t.Fatalf("config show: exit %d\n%s", code, out)
	}
	// The text form is itself a valid config file that loads to the same values.
	var reparsed = config.Default()
	body := out[strings.Index(out, "\n")+1:]
	if err := config.Parse([]byte(body), &reparsed); err != nil || !reflect.DeepEqual(reparsed, want) {
		t.Fatalf("config show output does not round-trip: %v %+v", err, reparsed)
	}
}

func TestWriteNetworkStatus(t *testing.T) {
	st := api.NetworkStatus{
		Network: api.NetworkState{
			Config: api.NetworkInfo{Bridge: "banger0", Subnet: "10.213.77.0/24", Gateway: "10.213.77.1", Table: "banger"},
			Bridge: &api.NetworkBridgeState{Name: "banger0", Up: true, Addrs: []string{"10.213.77.1/24"}, IPv6Disabled: true},
			Taps: []api.NetworkTapState{{Name: "bt-0123abcd", OwnerUID: 1000, Up: true, Master: "banger0", SourceRules: 7, Isolated: true, IPv6Disabled: true},
				{Name: "bt-4567", OwnerUID: 1000, Master: "banger0"}},
			Forwarding:    true,
			ForwardingWas: "0",
			Chains:        map[string]int{"postrouting": 1, "forward": 6, "input": 2},
			BridgeChains:  map[string]int{"prerouting": 2, "taps": 7, "forward": 1, "isolation": 2},
			Changes:       []string{"bridge banger0 created", "net.ipv4.ip_forward set to 1 (was 0)"},
		},
		DNS: &api.DNSStatus{Serving: true, Addr: "10.213.77.1:53", Domain: "banger", Names: 2},
	}
	var b bytes.Buffer
	writeNetworkStatus(&b, st)
	want := `config:      bridge banger0, subnet 10.213.77.0/24, gateway 10.213.77.1, nft table banger
bridge:      banger0 up 10.213.77.1/24, ipv6 off
forwarding:  true (banger turned it on; was 0, restored by ` + "`banger system network down`" + `)
nft inet:    banger (rules: forward 6, input 2, postrouting 1)
nft bridge:  banger (rules: forward 1, isolation 2, prerouting 2, taps 7)
taps:        2
  bt-0123abcd      up   on banger0, owner uid 1000, isolated, 7 source rules
  bt-4567          down on banger0, owner uid 1000, shared, NO SOURCE RULES (drops everything)
changed:
  bridge banger0 created
  net.ipv4.ip_forward set to 1 (was 0)
dns:         serving .banger on 10.213.77.1:53 (2 names)
`
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	writeNetworkStatus(&b, api.NetworkStatus{Network: api.NetworkState{Config: st.Network.Config}})
	for _, s := range []string{"bridge:      absent", "nft inet:    absent", "nft bridge:  absent", "taps:        0", "changed:     nothing on this host", "forwarding:  false (not changed by banger)", "dns:         unknown"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("empty network status lacks %q:\n%s", s, b.String())
		}
	}
}
