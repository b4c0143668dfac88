package updater

import (
	"errors"
	"testing"
)

func TestCompareVersions(t *testing.T) {
	cases := []struct {
		a, b string
		want int
		ok   bool
	}{
		{"v0.1.0", "v0.2.0", -1, true},
		{"v0.10.0", "v0.9.9", 1, true},
		{"v1.0.0", "v1.0.0", 0, true},
		{"v1.0.0-rc.1", "v1.0.0", -1, true},
		{"v1.0.0-rc.2", "v1.0.0-rc.10", -1, true},
		{"v1.0.0-alpha", "v1.0.0-alpha.1", -1, true},
		{"v1.0.0-1", "v1.0.0-alpha", -1, true},
		{"v1.0.0+build.5", "v1.0.0", 0, true},
		{"v0.0.0-dev+abc", "v0.1.0", -1, true},
		{"v0.smoke.0", "v0.1.0", 0, false},
		{"v0.1.0", "v0.smoke.broken-bangerd", 0, false},
		{"1.0.0", "v1.0.0", 0, false},
		{"v01.0.0", "v1.0.0", 0, false},
		{"v1.2", "v1.2.0", 0, false}, // semver shorthands are not releases
		{"v1", "v1.0.0", 0, false},
	}
	for _, c := range cases {
		got, ok := CompareVersions(c.a, c.b)
		if got != c.want || ok != c.ok {
			t.Errorf("CompareVersions(%q, %q) = %d, %v; want %d, %v", c.a, c.b, got, ok, c.want, c.ok)
		}
	}
}

func TestValidVersion(t *testing.T) {
	for _, v := range []string{"v0.1.0", "v0.smoke.0", "v0.smoke.broken-bangerd", "v1.0.0+meta"} {
		if !ValidVersion(v) {
			t.Errorf("%q rejected", v)
		}
	}
	for _, v := range []string{"", "0.1.0", "v../x", "v1/2", "v1 2", "v1\n"} {
		if ValidVersion(v) {
			t.Errorf("%q accepted", v)
		}
	}
}

func TestDecide(t *testing.T) {
	m := &Manifest{Schema: 1, Latest: "v0.2.0", Releases: []Release{
		{Version: "v0.1.0"}, {Version: "v0.2.0"}, {Version: "v0.smoke.0"},
	}}
	cases := []struct {
		current, to string
		target      string
		update      bool
	}{
		{"v0.1.0", "", "v0.2.0", true},               // newer latest
		{"v0.2.0", "", "v0.2.0", false},              // up to date
		{"v0.3.0", "", "v0.2.0", false},              // latest is older: never downgrade implicitly
		{"v0.3.0", "v0.1.0", "v0.1.0", true},         // explicit downgrade
		{"v0.2.0", "v0.2.0", "v0.2.0", false},        // already there
		{"v0.1.0", "v0.smoke.0", "v0.smoke.0", true}, // dev build on request
		{"v0.smoke.0", "", "v0.2.0", true},           // dev build installed: latest offered
	}
	for _, c := range cases {
		d, err := Decide(m, c.current, c.to)
		if err != nil {
			t.Fatalf("Decide(%q, %q): %v", c.current, c.to, err)
		}
		if d.Target != c.target || d.UpdateAvailable != c.update || d.Reason == "" {
			t.Errorf("Decide(%q, %q) = %+v; want target %s update %v", c.current, c.to, d, c.target, c.update)
		}
	}
	if _, err := Decide(m, "v0.1.0", "v9.9.9"); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("unknown --to: %v, want ErrUnknownVersion", err)
	}
}
