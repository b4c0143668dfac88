package jailer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/testutil"
)

func TestValidate(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if got := (Config{}).WithDefaults(); got != Default() {
		t.Fatalf("zero config with defaults = %+v", got)
	}
	cases := map[string]struct {
		mutate func(c *Config)
		want   string
	}{
		"relative binary":      {func(c *Config) { c.FirecrackerBinary = "firecracker" }, "firecracker.binary"},
		"unclean jailer":       {func(c *Config) { c.JailerBinary = "/usr/../tmp/jailer" }, "firecracker.jailer_binary"},
		"uid 0":                {func(c *Config) { c.UIDStart = 0; c.UIDCount = 5 }, "firecracker.uid_start"},
		"system uids":          {func(c *Config) { c.UIDStart = 100 }, "firecracker.uid_start"},
		"count 0":              {func(c *Config) { c.UIDCount = 0 }, "firecracker.uid_count"},
		"count too big":        {func(c *Config) { c.UIDCount = 1 << 20 }, "firecracker.uid_count"},
		"range past uid_t":     {func(c *Config) { c.UIDStart = 1<<32 - 10; c.UIDCount = 20 }, "firecracker.uid_start"},
		"cgroup 3":             {func(c *Config) { c.CgroupVersion = "3" }, "firecracker.cgroup_version"},
		"chroot base /":        {func(c *Config) { c.ChrootBase = "/" }, "firecracker.chroot_base"},
		"chroot base relative": {func(c *Config) { c.ChrootBase = "jails" }, "firecracker.chroot_base"},
	}
	for name, tc := range cases {
		c := Default()
		tc.mutate(&c)
		err := c.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalid naming %s", name, err, tc.want)
		}
	}
}

func TestArgsAndLayout(t *testing.T) {
	c := Default()
	c.FirecrackerBinary = "/opt/fc/firecracker-v1.7"
	got := strings.Join(c.Args("abc123", 1900000001, 1900000001), " ")
	want := "--id abc123 --exec-file /opt/fc/firecracker-v1.7 --uid 1900000001 --gid 1900000001 --chroot-base-dir /var/lib/banger/jailer --cgroup-version 2 -- --api-sock /api.sock"
	if got != want {
		t.Fatalf("args\n got %s\nwant %s", got, want)
	}
	if d := c.JailDir("abc123"); d != "/var/lib/banger/jailer/firecracker-v1.7/abc123" {
		t.Fatalf("jail dir %s", d)
	}
	if !c.InRange(DefaultUIDStart) || c.InRange(DefaultUIDStart+DefaultUIDCount) || c.InRange(DefaultUIDStart-1) {
		t.Fatal("InRange")
	}
}

func TestCheckRange(t *testing.T) {
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	group := filepath.Join(dir, "group")
	os.WriteFile(passwd, []byte("root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n"), 0o644)
	os.WriteFile(group, []byte("root:x:0:\nwheel:x:10:alice\n"), 0o644)
	c := Config{UIDStart: 2000, UIDCount: 10}
	if err := c.CheckRange(passwd, group); err != nil {
		t.Fatalf("free range: %v", err)
	}
	c.UIDStart = 995
	if err := c.CheckRange(passwd, group); err == nil || !strings.Contains(err.Error(), `"alice"`) {
		t.Fatalf("range with alice: %v", err)
	}
	c.UIDStart = 5
	if err := c.CheckRange(passwd, group); err == nil || !strings.Contains(err.Error(), `"wheel"`) {
		t.Fatalf("range with wheel: %v", err)
	}
	if err := (Config{UIDStart: 2000, UIDCount: 1}).CheckRange(filepath.Join(dir, "none"), filepath.Join(dir, "none")); err != nil {
		t.Fatalf("missing files: %v", err)
	}
}

func TestHostCgroupVersion(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "mountinfo")
		os.WriteFile(p, []byte(s), 0o644)
		return p
	}
	v2 := "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"
	hybrid := "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
	if v, err := HostCgroupVersion(write(v2)); v != "2" || err != nil {
		t.Errorf("v2: %q %v", v, err)
	}
	if v, err := HostCgroupVersion(write(hybrid)); v != "1" || err != nil {
		t.Errorf("hybrid: %q %v", v, err)
	}
	if _, err := HostCgroupVersion(write("1 0 0:1 / / rw - ext4 /dev/sda rw\n")); err == nil {
		t.Error("no cgroups: no error")
	}
}

func TestCheckRootBinary(t *testing.T) {
	testutil.RequireRoot(t) // to make files of root and of another user
	dir, err := os.MkdirTemp("", "banger-jailer-bin-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	good := filepath.Join(dir, "jailer")
	os.WriteFile(good, []byte("#!/bin/sh\n"), 0o755)
	if err := CheckRootBinary(good); err != nil {
		t.Fatalf("root-owned binary: %v", err)
	}
	for name, mk := range map[string]func(p string){
		"owned by a user": func(p string) { os.WriteFile(p, []byte("x"), 0o755); os.Chown(p, 4242, 4242) },
		"group-writable":  func(p string) { os.WriteFile(p, []byte("x"), 0o775); os.Chmod(p, 0o775) },
		"not executable":  func(p string) { os.WriteFile(p, []byte("x"), 0o644) },
		"symlink":         func(p string) { os.Symlink(good, p) },
		"missing":         func(p string) {},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		mk(p)
		if err := CheckRootBinary(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	userDir := filepath.Join(dir, "user")
	os.Mkdir(userDir, 0o755)
	os.Chown(userDir, 4242, 4242)
	inUser := filepath.Join(userDir, "jailer")
	os.WriteFile(inUser, []byte("x"), 0o755)
	if err := CheckRootBinary(inUser); err == nil {
		t.Error("binary in a user's directory accepted")
	}
}
