package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The test binary doubles as bangerd (copied into a scratch directory) when
// this variable is set.
const envAsBangerd = "BANGERD_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envAsBangerd) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// The deprecated `bangerd --root-helper` of units written by the previous
// release runs banger-helper (beside bangerd) with the same arguments.
func TestRootHelperFlagExecsBangerHelper(t *testing.T) {
	dir := t.TempDir()
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bangerd := filepath.Join(dir, "bangerd")
	if err := os.WriteFile(bangerd, self, 0o755); err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(dir, "banger-helper")
	if err := os.WriteFile(helper, []byte("#!/bin/sh\necho \"helper ran as $0 with: $*\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bangerd, "--root-helper", "--owner-uid", "1000", "--socket", "/run/x.sock")
	cmd.Env = append(os.Environ(), envAsBangerd+"=1", "BANGER_SYSTEM_ROOT="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bangerd --root-helper: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--root-helper is deprecated") ||
		!strings.Contains(string(out), "helper ran as "+helper+" with: --root-helper --owner-uid 1000 --socket /run/x.sock") {
		t.Fatalf("bangerd --root-helper did not run banger-helper with its arguments:\n%s", out)
	}
	// Without banger-helper beside it, nor installed, it says what is missing.
	if err := os.Remove(helper); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(bangerd, cmd.Args[1:]...)
	cmd.Env = append(os.Environ(), envAsBangerd+"=1", "BANGER_SYSTEM_ROOT="+t.TempDir())
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "banger-helper not found") {
		t.Fatalf("without banger-helper: %v\n%s", err, out)
	}
}
