package cli

import (
	"path/filepath"
	"testing"

	"github.com/bangerdev/banger/internal/api"
)

func TestParsePortPair(t *testing.T) {
	for in, want := range map[string][2]int{"8080": {8080, 8080}, "22:0": {22, 0}, "5432:15432": {5432, 15432}} {
		g, h, err := parsePortPair(in)
		if err != nil || g != want[0] || h != want[1] {
			t.Errorf("%q: %d %d %v, want %v", in, g, h, err, want)
		}
	}
	for _, bad := range []string{"", "0", "65536", "x", "80:", "80:-1", "80:70000", "a:b"} {
		if _, _, err := parsePortPair(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCopyParams(t *testing.T) {
	abs, _ := filepath.Abs("dir")
	p, err := copyParams("./dir", "dev:/tmp/x")
	if err != nil || p != (api.VMCopy{Name: "dev", Direction: api.CopyIn, Local: abs, Guest: "/tmp/x"}) {
		t.Fatalf("in: %+v %v", p, err)
	}
	p, err = copyParams("dev-2:/var/log", "/tmp/out")
	if err != nil || p != (api.VMCopy{Name: "dev-2", Direction: api.CopyOut, Local: "/tmp/out", Guest: "/var/log"}) {
		t.Fatalf("out: %+v %v", p, err)
	}
	for _, bad := range [][2]string{{"a", "b"}, {"dev:/a", "dev:/b"}, {"./x", "dev:relative"}, {"/x:y", "./a:b"}} {
		if _, err := copyParams(bad[0], bad[1]); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
