package guestconfig

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/model"
)

func sample() *Config {
	return &Config{
		VMName:   "happy-otter",
		Hostname: "happy-otter",
		BootID:   "0f3c9a1e-boot",
		InitMode: model.InitFast,
		Network: &Network{
			Address: netip.MustParsePrefix("172.30.0.5/24"),
			Gateway: netip.MustParseAddr("172.30.0.1"),
			DNS:     []netip.Addr{netip.MustParseAddr("172.30.0.1")},
			MAC:     "52:54:00:12:34:56",
		},
		AuthorizedKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0 dev@host"},
		Agent:          Agent{Transport: model.TransportVirtioSerial, PortName: "banger.agent"},
		Modules:        []string{"9p"},
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.disk")
	want := sample()
	if err := Write(path, want); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() < MinDiskSize || fi.Size()%512 != 0 {
		t.Fatalf("disk size %d: want a multiple of 512 and at least %d", fi.Size(), MinDiskSize)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("disk mode %v, want 0600", fi.Mode().Perm())
	}
	got, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
}

func TestNoNetworkRoundTrip(t *testing.T) {
	cfg := sample()
	cfg.Network = nil
	cfg.Agent = Agent{Transport: model.TransportVsock, VsockPort: 1024}
	disk, err := Encode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Read(bytes.NewReader(disk))
	if err != nil {
		t.Fatal(err)
	}
	if got.Network != nil || got.Agent.VsockPort != 1024 {
		t.Fatalf("got %+v", got)
	}
}

func TestLargePayloadPadsToSector(t *testing.T) {
	cfg := sample()
	for i := 0; i < 400; i++ {
		cfg.AuthorizedKeys = append(cfg.AuthorizedKeys, "ssh-ed25519 "+strings.Repeat("A", 200))
	}
	disk, err := Encode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(disk) <= MinDiskSize || len(disk)%512 != 0 {
		t.Fatalf("disk size %d: want > %d and a multiple of 512", len(disk), MinDiskSize)
	}
	if _, err := Read(bytes.NewReader(disk)); err != nil {
		t.Fatal(err)
	}
}

func TestReadRejectsDamage(t *testing.T) {
	good, err := Encode(sample())
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint32(good[20:])
	cases := []struct {
		name   string
		damage func(d []byte) []byte
		want   error
	}{
		{"no magic", func(d []byte) []byte { d[0] = 'X'; return d }, ErrNotConfigDisk},
		{"zeroed disk", func(d []byte) []byte { return make([]byte, len(d)) }, ErrNotConfigDisk},
		{"too short", func(d []byte) []byte { return d[:20] }, ErrNotConfigDisk},
		{"version", func(d []byte) []byte { binary.LittleEndian.PutUint32(d[16:], 99); return d }, ErrUnsupportedVersion},
		{"zero length", func(d []byte) []byte { binary.LittleEndian.PutUint32(d[20:], 0); return d }, ErrCorrupt},
		{"huge length", func(d []byte) []byte { binary.LittleEndian.PutUint32(d[20:], MaxPayload+1); return d }, ErrCorrupt},
		{"length past end", func(d []byte) []byte { return d[:HeaderSize+int(n)-1] }, ErrCorrupt},
		{"payload flipped", func(d []byte) []byte { d[HeaderSize+3] ^= 0x20; return d }, ErrCorrupt},
		{"hash flipped", func(d []byte) []byte { d[30] ^= 1; return d }, ErrCorrupt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.damage(bytes.Clone(good))
			_, err := Read(bytes.NewReader(d))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Read = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReadRejectsInvalidContentWithValidHash(t *testing.T) {
	// A well-formed disk whose JSON is hostile must still be refused.
	cfg := sample()
	disk, err := Encode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint32(disk[20:])
	payload := bytes.Replace(disk[HeaderSize:HeaderSize+n], []byte(`"hostname":"happy-otter"`), []byte(`"hostname":"a;rm -rf"`), 1)
	forged := make([]byte, len(disk))
	copy(forged, disk[:HeaderSize])
	binary.LittleEndian.PutUint32(forged[20:], uint32(len(payload)))
	sum := sha256sum(payload)
	copy(forged[24:56], sum)
	copy(forged[HeaderSize:], payload)
	if _, err := Read(bytes.NewReader(forged)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Read = %v, want ErrInvalid", err)
	}
}

func TestValidate(t *testing.T) {
	cases := map[string]func(c *Config){
		"empty hostname":   func(c *Config) { c.Hostname = "" },
		"bad hostname":     func(c *Config) { c.Hostname = "-bad" },
		"boot id space":    func(c *Config) { c.BootID = "a b" },
		"init mode":        func(c *Config) { c.InitMode = "systemd" },
		"mac":              func(c *Config) { c.Network.MAC = "nope" },
		"address":          func(c *Config) { c.Network.Address = netip.Prefix{} },
		"mixed families":   func(c *Config) { c.Network.Gateway = netip.MustParseAddr("fd00::1") },
		"multi-line key":   func(c *Config) { c.AuthorizedKeys = []string{"ssh-ed25519 A\nssh-rsa B"} },
		"transport":        func(c *Config) { c.Agent.Transport = "tcp" },
		"port name":        func(c *Config) { c.Agent.PortName = "../x" },
		"vsock port":       func(c *Config) { c.Agent = Agent{Transport: model.TransportVsock} },
		"module traversal": func(c *Config) { c.Modules = []string{"../../evil"} },
		"mount tag":        func(c *Config) { c.Mounts = []Mount{{Tag: "a,b", Path: "/x"}} },
		"mount relative":   func(c *Config) { c.Mounts = []Mount{{Tag: "banger0", Path: "x"}} },
		"mount root":       func(c *Config) { c.Mounts = []Mount{{Tag: "banger0", Path: "/"}} },
		"mount unclean":    func(c *Config) { c.Mounts = []Mount{{Tag: "banger0", Path: "/a/../etc"}} },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			c := sample()
			mutate(c)
			if err := c.Validate(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
			if err := Write(filepath.Join(t.TempDir(), "c"), c); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Write = %v, want ErrInvalid", err)
			}
		})
	}
	if err := sample().Validate(); err != nil {
		t.Fatalf("sample config: %v", err)
	}
	withMounts := sample()
	withMounts.Mounts = []Mount{{Tag: "banger0", Path: "/work"}, {Tag: "banger1", Path: "/data", ReadOnly: true}}
	if err := withMounts.Validate(); err != nil {
		t.Fatalf("config with mounts: %v", err)
	}
}

func TestHasMagic(t *testing.T) {
	disk, err := Encode(sample())
	if err != nil {
		t.Fatal(err)
	}
	if !HasMagic(bytes.NewReader(disk)) {
		t.Fatal("HasMagic(config disk) = false")
	}
	if HasMagic(bytes.NewReader(make([]byte, 4096))) {
		t.Fatal("HasMagic(zeros) = true")
	}
}

func sha256sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }
