package toolingplan

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func fixtureLookup(t *testing.T) Lookup {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "Packages"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := StaticIndex(f, "bookworm")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// want is one expected step: ok steps name their package and Debian
// version, the others a phrase of their reason.
type want struct {
	tool, version, source string
	ok                    bool
	detail                string
}

func TestPlanFixtures(t *testing.T) {
	const unsat = "not satisfiable from the distro: "
	for _, tc := range []struct {
		dir      string
		steps    []want
		packages []string
	}{
		{"go", []want{
			{"go", ">=1.19", "go.mod (go)", true, "golang-go 2:1.19~1"},
			{"go", "", "Makefile (recipe runs go)", true, "golang-go 2:1.19~1"},
			{"jq", "", "Makefile (recipe runs jq)", true, "jq 1.6-2.1"},
			{"protoc", "", "Makefile (recipe runs protoc)", true, "protobuf-compiler 3.21.12-3"},
		}, []string{"golang-go", "jq", "protobuf-compiler"}},
		{"node", []want{
			{"node", ">=18.0.0 <21", "package.json (engines.node)", true, "nodejs 18.19.0+dfsg-6~deb12u2"},
			{"npm", "^9.1.0", "package.json (engines.npm)", true, "npm 9.2.0~ds1-1"},
			{"node", "v20.11.1", ".nvmrc", false, unsat + "v20.11.1 wanted, 18.19.0 available"},
		}, []string{"nodejs", "npm"}},
		{"python", []want{
			{"python", ">=3.10,<3.13", "pyproject.toml (project.requires-python)", true, "python3 3.11.2-1+b1"},
			{"python", "3.12", ".python-version", false, unsat + "3.12 wanted, 3.11.2 available"},
		}, []string{"python3"}},
		{"rust", []want{
			{"rust", ">=1.70", "Cargo.toml (package.rust-version)", false, unsat + ">=1.70 wanted, 1.63.0 available"},
			{"rust", "stable", "rust-toolchain.toml (toolchain.channel)", false, `"stable" names no version number`},
		}, []string{}},
		{"mixed", []want{
			{"go", ">=1.22.3", "go.mod (go)", false, unsat + ">=1.22.3 wanted, 1.19 available"},
			{"go", ">=1.22.5", "go.mod (toolchain)", false, unsat + ">=1.22.5 wanted, 1.19 available"},
			{"node", "18.19.0", ".tool-versions (nodejs)", true, "nodejs 18.19.0+dfsg-6~deb12u2"},
			{"python", "3.11.2", ".tool-versions (python)", true, "python3 3.11.2-1+b1"},
			{"terraform", "1.7.0", ".tool-versions (terraform)", false, unsat + "no Debian package is known to provide terraform"},
			{"go", "1.19", "mise.toml (tools.go)", true, "golang-go 2:1.19~1"},
			{"node", "18", "mise.toml (tools.node)", true, "nodejs 18.19.0+dfsg-6~deb12u2"},
			{"python", "3.11", "mise.toml (tools.python)", true, "python3 3.11.2-1+b1"},
		}, []string{"golang-go", "nodejs", "python3"}},
		{"none", nil, []string{}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			reqs, err := Detect(os.DirFS(filepath.Join("testdata", tc.dir)))
			if err != nil {
				t.Fatal(err)
			}
			p, err := Make(context.Background(), reqs, fixtureLookup(t))
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Steps) != len(tc.steps) {
				t.Fatalf("%d steps, want %d: %+v", len(p.Steps), len(tc.steps), p.Steps)
			}
			complete := true
			for i, w := range tc.steps {
				s := p.Steps[i]
				got := s.Reason
				if s.Satisfied {
					got = s.Package + " " + s.Available
				}
				if s.Tool != w.tool || s.Version != w.version || s.Source != w.source || s.Satisfied != w.ok || !strings.Contains(got, w.detail) {
					t.Errorf("step %d = %s %q from %s: ok=%v %q\nwant %s %q from %s: ok=%v %q", i, s.Tool, s.Version, s.Source, s.Satisfied, got,
						w.tool, w.version, w.source, w.ok, w.detail)
				}
				complete = complete && w.ok
			}
			if !slices.Equal(p.Packages, tc.packages) || p.Complete != complete {
				t.Errorf("packages %v complete %v, want %v %v", p.Packages, p.Complete, tc.packages, complete)
			}
			var buf bytes.Buffer
			p.Text(&buf)
			for _, w := range tc.steps {
				if !strings.Contains(buf.String(), w.detail) {
					t.Errorf("text output lacks %q:\n%s", w.detail, buf.String())
				}
			}
		})
	}
}

func TestDetectBrokenFileIsNamed(t *testing.T) {
	_, err := Detect(os.DirFS(filepath.Join("testdata", "broken")))
	if err == nil || !strings.Contains(err.Error(), "package.json") {
		t.Fatalf("err = %v, want one naming package.json", err)
	}
}

func TestPlanHashFollowsPackages(t *testing.T) {
	l := fixtureLookup(t)
	a, _ := Make(context.Background(), []Request{{Tool: "go"}, {Tool: "jq"}}, l)
	b, _ := Make(context.Background(), []Request{{Tool: "jq"}, {Tool: "go", Source: "elsewhere"}}, l)
	c, _ := Make(context.Background(), []Request{{Tool: "go"}}, l)
	if a.Hash != b.Hash || a.Hash == c.Hash {
		t.Errorf("hashes %s %s %s: same packages must hash alike, others not", a.Hash, b.Hash, c.Hash)
	}
}

func TestConstraints(t *testing.T) {
	for _, tc := range []struct {
		c   string
		yes []string
		no  []string
	}{
		{">=1.19", []string{"1.19", "1.19.0", "1.22.5"}, []string{"1.18.9"}},
		{"20", []string{"20.0.0", "20.11.1"}, []string{"21.0.0", "2.0"}},
		{"3.11", []string{"3.11.2"}, []string{"3.1", "3.12.0"}},
		{"18.x", []string{"18.19.0"}, []string{"19.0.0"}},
		{"3.11.*", []string{"3.11.9"}, []string{"3.12"}},
		{"^9.1.0", []string{"9.1.0", "9.9.9"}, []string{"9.0.9", "10.0.0"}},
		{"^0.2.3", []string{"0.2.9"}, []string{"0.3.0"}},
		{"~1.2.3", []string{"1.2.9"}, []string{"1.3.0", "1.2.2"}},
		{"~=3.11", []string{"3.11.0", "3.99"}, []string{"4.0", "3.10"}},
		{"~=3.11.2", []string{"3.11.5"}, []string{"3.12.0"}},
		{">=3.10,<3.13", []string{"3.10", "3.12.9"}, []string{"3.13.0", "3.9"}},
		{">= 3.10, != 3.11.1", []string{"3.11.2"}, []string{"3.11.1"}},
		{"16 || >=18", []string{"16.3", "18.1"}, []string{"17.0"}},
		{"1.2 - 1.4", []string{"1.2.0", "1.4"}, []string{"1.4.1", "1.1"}},
		{"==3.11", []string{"3.11.4"}, []string{"3.12"}},
	} {
		c, err := ParseConstraint(tc.c)
		if err != nil {
			t.Errorf("%q: %v", tc.c, err)
			continue
		}
		for _, v := range tc.yes {
			if !c.Allows(v) {
				t.Errorf("%q should allow %s", tc.c, v)
			}
		}
		for _, v := range tc.no {
			if c.Allows(v) {
				t.Errorf("%q should not allow %s", tc.c, v)
			}
		}
	}
	for _, bad := range []string{"", "stable", "lts/*", ">=abc", "~=3"} {
		if _, err := ParseConstraint(bad); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}

func TestUpstream(t *testing.T) {
	for in, want := range map[string]string{
		"2:1.19~1": "1.19", "18.19.0+dfsg-6~deb12u2": "18.19.0", "3.11.2-1+b1": "3.11.2",
		"1.63.0+dfsg1-2": "1.63.0", "1:2.39.5-0+deb12u1": "2.39.5", "1.6-2.1": "1.6",
	} {
		if got := Upstream(in); got != want {
			t.Errorf("Upstream(%q) = %q, want %q", in, got, want)
		}
	}
}
