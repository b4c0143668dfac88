package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestJailerFlagsValidated: bad jailer settings stop the helper at once
// with the setting named, before it serves anything.
func TestJailerFlagsValidated(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--owner-uid", "1000", "--jailer-uid-start", "5"}, "firecracker.uid_start"},
		{[]string{"--owner-uid", "1000", "--jailer-binary", "jailer"}, "firecracker.jailer_binary"},
		{[]string{"--owner-uid", "1000", "--jailer-cgroup-version", "3"}, "firecracker.cgroup_version"},
		{[]string{"--owner-uid", "1000", "--jailer-chroot-base", "/"}, "firecracker.chroot_base"},
	} {
		var out, errb bytes.Buffer
		if code := run(tc.args, &out, &errb); code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 naming %s", tc.args, code, errb.String(), tc.want)
		}
	}
}
