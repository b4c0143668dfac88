package guestsync

import (
	"fmt"
	"path"
	"strings"
)

// Matcher decides which names a sync leaves alone, with .gitignore rules:
// "#" comments, "!" re-includes, a trailing "/" matches directories only,
// a pattern with a "/" elsewhere is anchored at the synced directory
// while one without matches a name at any depth, "*", "?" and "[…]" stay
// within one element, "**" spans any number of them, and the last pattern
// that matches wins. (Negating inside an excluded directory does not bring
// its entries back, as with git: the directory is never descended.)
type Matcher struct {
	rules []rule
}

type rule struct {
	elems   []string // pattern split at "/"
	anchor  bool     // matched from the root, not at any depth
	dirOnly bool
	negate  bool
	text    string
}

// ParseIgnore compiles .gitignore-style lines; src names them in errors.
func ParseIgnore(src string, lines []string) (*Matcher, error) {
	m := &Matcher{}
	if err := m.Add(src, lines); err != nil {
		return nil, err
	}
	return m, nil
}

// Add appends lines (later lines win over earlier ones).
func (m *Matcher) Add(src string, lines []string) error {
	for i, raw := range lines {
		line := strings.TrimSuffix(raw, "\r")
		if !strings.HasSuffix(line, `\ `) {
			line = strings.TrimRight(line, " \t")
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := rule{text: line}
		if strings.HasPrefix(line, "!") {
			r.negate, line = true, line[1:]
		} else if strings.HasPrefix(line, `\!`) || strings.HasPrefix(line, `\#`) {
			line = line[1:]
		}
		if strings.HasSuffix(line, "/") {
			r.dirOnly, line = true, strings.TrimRight(line, "/")
		}
		if strings.Contains(line, "/") {
			r.anchor = true
		}
		line = strings.TrimPrefix(line, "/")
		if line == "" {
			continue // "/" or "!/": matches nothing useful
		}
		r.elems = strings.Split(line, "/")
		for _, e := range r.elems {
			if e == "**" {
				continue
			}
			if _, err := path.Match(e, ""); err != nil {
				return fmt.Errorf("%s line %d: bad pattern %q: %w", src, i+1, raw, err)
			}
		}
		m.rules = append(m.rules, r)
	}
	return nil
}

// Match says whether name (slash-separated, relative) is excluded; isDir
// says whether it is a directory.
func (m *Matcher) Match(name string, isDir bool) bool {
	if m == nil {
		return false
	}
	elems := strings.Split(name, "/")
	excluded := false
	for _, r := range m.rules {
		if r.dirOnly && !isDir {
			continue
		}
		if r.matches(elems) {
			excluded = !r.negate
		}
	}
	return excluded
}

func (r rule) matches(name []string) bool {
	if r.anchor {
		return matchElems(r.elems, name)
	}
	// One element, no slash: the name's last element at any depth.
	return matchElems(r.elems, name[len(name)-1:])
}

// matchElems matches pattern elements against name elements; "**" takes
// zero or more of them.
func matchElems(pat, name []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(name); i++ {
				if matchElems(pat[1:], name[i:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], name[0]); !ok {
			return false
		}
		pat, name = pat[1:], name[1:]
	}
	return len(name) == 0
}
