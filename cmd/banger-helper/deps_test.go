package main

import (
	"flag"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/deps.txt from go list")

// forbidden are module prefixes that must never reach the root binary,
// whatever the allowlist says: the store, the VMM SDK and the registry
// clients are the owner daemon's business.
var forbidden = []string{
	"modernc.org/sqlite", "github.com/mattn/go-sqlite3",
	"github.com/firecracker-microvm/firecracker-go-sdk",
	"github.com/google/go-containerregistry",
	"github.com/docker/",
	"github.com/go-openapi/", "go.mongodb.org/mongo-driver",
	"github.com/bangerdev/banger/internal/store",
	"github.com/bangerdev/banger/internal/daemon",
	"github.com/bangerdev/banger/internal/vmm",
	"github.com/bangerdev/banger/internal/imagepull",
}

// TestImportGraphPinned keeps banger-helper small: every non-standard
// package it links must be listed in testdata/deps.txt, so a new
// dependency of the root binary is a reviewed change (go test -update).
func TestImportGraphPinned(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("go toolchain not on PATH: %v", err)
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	var got []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			got = append(got, l)
		}
	}
	slices.Sort(got)
	for _, p := range got {
		for _, f := range forbidden {
			if strings.HasPrefix(p, f) {
				t.Errorf("banger-helper links %s (forbidden prefix %s): the root binary must not carry it", p, f)
			}
		}
	}
	if t.Failed() {
		return
	}
	if *update {
		if err := os.WriteFile("testdata/deps.txt", []byte(strings.Join(got, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	data, err := os.ReadFile("testdata/deps.txt")
	if err != nil {
		t.Fatalf("read allowlist: %v", err)
	}
	var allowed []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			allowed = append(allowed, l)
		}
	}
	var added, gone []string
	for _, p := range got {
		if !slices.Contains(allowed, p) {
			added = append(added, "+ "+p)
		}
	}
	for _, p := range allowed {
		if !slices.Contains(got, p) {
			gone = append(gone, "- "+p)
		}
	}
	if len(added) > 0 {
		t.Errorf("banger-helper links packages not in testdata/deps.txt (review, then go test ./cmd/banger-helper -update):\n%s", strings.Join(added, "\n"))
	}
	if len(gone) > 0 {
		t.Errorf("testdata/deps.txt lists packages banger-helper no longer links (go test ./cmd/banger-helper -update):\n%s", strings.Join(gone, "\n"))
	}
}

// TestForbiddenListBites proves the forbidden check would catch the owner
// daemon's graph: bangerd links every forbidden module the helper must not.
func TestForbiddenListBites(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "../bangerd").Output()
	if err != nil {
		t.Fatalf("go list -deps bangerd: %v", err)
	}
	hit := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if strings.HasPrefix(p, f) {
				hit[f] = true
			}
		}
	}
	for _, f := range []string{"modernc.org/sqlite", "github.com/firecracker-microvm/firecracker-go-sdk", "github.com/google/go-containerregistry", "github.com/docker/"} {
		if !hit[f] {
			t.Errorf("bangerd does not link %s: the forbidden list no longer matches the modules it guards against", f)
		}
	}
}
