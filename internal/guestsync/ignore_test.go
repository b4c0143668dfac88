package guestsync

import "testing"

func TestMatcher(t *testing.T) {
	m, err := ParseIgnore("test", []string{
		"# comment",
		"",
		"*.log",
		"!keep.log",
		"build/",
		"/root-only.txt",
		"docs/*.md",
		"**/gen/**",
		"a/**/z",
		"tmp?",
		`\#hash`,
		"trailing   ",
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		dir   bool
		match bool
	}{
		{"x.log", false, true},
		{"deep/down/x.log", false, true},
		{"keep.log", false, false},
		{"sub/keep.log", false, false},
		{"build", true, true},
		{"sub/build", true, true},
		{"build", false, false}, // dir-only pattern, a file named build
		{"root-only.txt", false, true},
		{"sub/root-only.txt", false, false},
		{"docs/a.md", false, true},
		{"docs/sub/a.md", false, false},
		{"x/gen/y", false, true},
		{"gen/y/z", false, true},
		{"a/z", false, true},
		{"a/b/c/z", false, true},
		{"b/a/z", false, false},
		{"tmp1", false, true},
		{"tmp", false, false},
		{"tmp12", false, false},
		{"#hash", false, true},
		{"trailing", false, true},
		{"main.go", false, false},
	} {
		if got := m.Match(tc.name, tc.dir); got != tc.match {
			t.Errorf("Match(%q, dir=%v) = %v, want %v", tc.name, tc.dir, got, tc.match)
		}
	}
}

func TestMatcherBadPattern(t *testing.T) {
	if _, err := ParseIgnore("--exclude", []string{"[z-a"}); err == nil {
		t.Error("a malformed class was accepted")
	}
}
