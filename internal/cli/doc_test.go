package cli

import (
	"bytes"
	"flag"
	"os"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// docs/cli.md is the golden rendering of the command tree.
func TestReferenceIsCurrent(t *testing.T) {
	var b bytes.Buffer
	if err := WriteReference(&b); err != nil {
		t.Fatal(err)
	}
	const golden = "../../docs/cli.md"
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read %s (run go test ./internal/cli -update): %v", golden, err)
	}
	if !bytes.Equal(want, b.Bytes()) {
		t.Fatalf("%s is stale: run `make docs` (or go test ./internal/cli -update)", golden)
	}
}

func TestEveryCommandHasExamples(t *testing.T) {
	root := NewRootCommand(Env{Getenv: func(string) string { return "" }})
	for _, c := range allCommands(root) {
		if c.Hidden || c.Name() == "help" || c.Parent() != nil && c.Parent().Name() == "completion" || c.Name() == "completion" {
			continue
		}
		if c.Example == "" {
			t.Errorf("%s has no examples in --help", c.CommandPath())
		}
	}
}
