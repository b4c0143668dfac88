package model

import (
	"strings"
	"testing"
)

func TestParseMount(t *testing.T) {
	for spec, want := range map[string]Mount{
		"/src":            {Source: "/src"},
		"/src:/dst":       {Source: "/src", Target: "/dst"},
		"/src:ro":         {Source: "/src", ReadOnly: true},
		"/src:/dst:ro":    {Source: "/src", Target: "/dst", ReadOnly: true},
		"/src:/dst:rw":    {Source: "/src", Target: "/dst"},
		"rel/dir:/dst":    {Source: "rel/dir", Target: "/dst"},
		"./proj:/work:ro": {Source: "./proj", Target: "/work", ReadOnly: true},
		"/src:/ro":        {Source: "/src", Target: "/ro"},
	} {
		got, err := ParseMount(spec)
		if err != nil || got != want {
			t.Errorf("ParseMount(%q) = %+v, %v; want %+v", spec, got, err, want)
		}
	}
	for _, bad := range []string{"", ":/dst", "/a:/b:/c", "/a:/b:ro:ro", "/src:"} {
		if m, err := ParseMount(bad); err == nil {
			t.Errorf("ParseMount(%q) = %+v, want an error", bad, m)
		}
	}
}

func TestValidateGuestPath(t *testing.T) {
	for _, ok := range []string{"/work", "/home/u/proj", "/mnt/a-b_c", "/procfs", "/devel"} {
		if err := ValidateGuestPath(ok); err != nil {
			t.Errorf("ValidateGuestPath(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "/", "rel", "/a/../b", "/a/", "/proc", "/proc/x", "/sys/fs", "/dev", "/run/x", "/etc/banger", "/a,b", "/a\nb", "/" + strings.Repeat("a", 1100)} {
		if err := ValidateGuestPath(bad); err == nil {
			t.Errorf("ValidateGuestPath(%q) accepted", bad)
		}
	}
}
