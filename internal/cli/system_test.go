package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/paths"
)

// A bad --subnet or --bridge is refused as a usage error before anything is
// installed, even though the owner and the three source binaries are valid
// (without the check, running as root would install them).
func TestSystemInstallRefusesBadNetworkLeavingNothing(t *testing.T) {
	bin := t.TempDir()
	for _, name := range []string{"banger", "bangerd", "banger-vsock-agent"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root := t.TempDir()
	env := map[string]string{paths.EnvSystemRoot: root, "HOME": t.TempDir(), "SUDO_USER": "nobody"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--subnet", "10.50.0.1/24"}, "did you mean 10.50.0.0/24"},
		{[]string{"--subnet", "banana"}, `"banana"`},
		{[]string{"--subnet", "10.50.0.0/24 --debug"}, "10.50.0.0/24 --debug"},
		{[]string{"--bridge", "eth0"}, `"eth0"`},
		{[]string{"--subnet", "10.50.0.0/24", "--bridge", "banger%n"}, "bridge"},
	} {
		var stdout, stderr bytes.Buffer
		e := Env{
			Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr,
			Getenv:     func(k string) string { return env[k] },
			Executable: filepath.Join(bin, "banger"),
		}
		code := Execute(context.Background(), e, append([]string{"system", "install", "--owner", "nobody"}, tc.args...))
		if code != 2 || !strings.Contains(stderr.String(), tc.want) || !strings.Contains(stderr.String(), "--subnet/--bridge") {
			t.Fatalf("system install %q: exit %d, want 2 and an error naming %q\n%s%s", tc.args, code, tc.want, stdout.String(), stderr.String())
		}
		if ents, _ := os.ReadDir(root); len(ents) != 0 {
			t.Fatalf("system install %q wrote under the system root: %v", tc.args, ents)
		}
	}
}
