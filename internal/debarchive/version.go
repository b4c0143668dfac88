package debarchive

import (
	"fmt"
	"strings"
)

// CompareVersions compares two Debian version strings per Debian policy
// §5.6.12: epoch numerically, then upstream version and revision with the
// dpkg algorithm (non-digit runs compared with '~' before everything, even
// the end of the string, and letters before other characters; digit runs
// compared numerically). It returns -1, 0 or 1.
func CompareVersions(a, b string) int {
	ea, ua, ra := splitVersion(a)
	eb, ub, rb := splitVersion(b)
	if c := compareNumeric(ea, eb); c != 0 {
		return c
	}
	if c := compareFragment(ua, ub); c != 0 {
		return c
	}
	return compareFragment(ra, rb)
}

func splitVersion(v string) (epoch, upstream, revision string) {
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, ':'); i >= 0 {
		epoch, v = v[:i], v[i+1:]
	}
	if i := strings.LastIndexByte(v, '-'); i >= 0 {
		v, revision = v[:i], v[i+1:]
	}
	return epoch, v, revision
}

func compareNumeric(a, b string) int {
	a = strings.TrimLeft(a, "0")
	b = strings.TrimLeft(b, "0")
	if len(a) != len(b) {
		if len(a) < len(b) {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}

// order gives a character's weight in a non-digit run: '~' sorts before
// the end of the string, letters before non-letters.
func order(c byte) int {
	switch {
	case c == '~':
		return -1
	case c >= '0' && c <= '9':
		return 0
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		return int(c)
	default:
		return int(c) + 256
	}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func compareFragment(a, b string) int {
	for a != "" || b != "" {
		// Non-digit prefix.
		for (a != "" && !isDigit(a[0])) || (b != "" && !isDigit(b[0])) {
			var ca, cb int
			if a != "" && !isDigit(a[0]) {
				ca = order(a[0])
			}
			if b != "" && !isDigit(b[0]) {
				cb = order(b[0])
			}
			if ca != cb {
				if ca < cb {
					return -1
				}
				return 1
			}
			if a != "" && !isDigit(a[0]) {
				a = a[1:]
			}
			if b != "" && !isDigit(b[0]) {
				b = b[1:]
			}
		}
		// Digit run.
		i := 0
		for i < len(a) && isDigit(a[i]) {
			i++
		}
		j := 0
		for j < len(b) && isDigit(b[j]) {
			j++
		}
		if c := compareNumeric(a[:i], b[:j]); c != 0 {
			return c
		}
		a, b = a[i:], b[j:]
	}
	return 0
}

// Relation is one alternative of a dependency field: "name (op version)".
type Relation struct {
	Name    string
	Op      string // "", "<<", "<=", "=", ">=", ">>"
	Version string
}

// ParseDepends splits a Depends field into its clauses, each a list of
// alternatives. Architecture qualifiers (":any") and restriction lists are
// dropped.
func ParseDepends(field string) ([][]Relation, error) {
	var out [][]Relation
	for _, clause := range strings.Split(field, ",") {
		clause = strings.TrimSpace(clause)
		if clause == "" {
			continue
		}
		var alts []Relation
		for _, alt := range strings.Split(clause, "|") {
			r, err := parseRelation(strings.TrimSpace(alt))
			if err != nil {
				return nil, err
			}
			alts = append(alts, r)
		}
		out = append(out, alts)
	}
	return out, nil
}

func parseRelation(s string) (Relation, error) {
	// The name runs to the version constraint, an architecture list
	// "[amd64]" or a build-profile list "<!nocheck>", whichever comes first.
	name, rest := s, ""
	if i := strings.IndexAny(s, "([<"); i >= 0 {
		name = s[:i]
		if s[i] == '(' {
			rest = s[i+1:]
		}
	}
	name = strings.TrimSpace(name)
	name, _, _ = strings.Cut(name, ":")
	if name == "" {
		return Relation{}, fmt.Errorf("empty package name in relation %q", s)
	}
	r := Relation{Name: name}
	if rest == "" {
		return r, nil
	}
	rest, _, ok := strings.Cut(rest, ")")
	if !ok {
		return Relation{}, fmt.Errorf("unclosed version in relation %q", s)
	}
	rest = strings.TrimSpace(rest)
	for _, op := range []string{"<<", "<=", ">=", ">>", "=", "<", ">"} {
		if strings.HasPrefix(rest, op) {
			r.Op = op
			r.Version = strings.TrimSpace(rest[len(op):])
			break
		}
	}
	// "<" and ">" are obsolete spellings of "<=" and ">=".
	switch r.Op {
	case "<":
		r.Op = "<="
	case ">":
		r.Op = ">="
	case "":
		return Relation{}, fmt.Errorf("unknown operator in relation %q", s)
	}
	if r.Version == "" {
		return Relation{}, fmt.Errorf("missing version in relation %q", s)
	}
	return r, nil
}

// Satisfied reports whether version meets the relation's constraint.
func (r Relation) Satisfied(version string) bool {
	if r.Op == "" {
		return true
	}
	c := CompareVersions(version, r.Version)
	switch r.Op {
	case "<<":
		return c < 0
	case "<=":
		return c <= 0
	case "=":
		return c == 0
	case ">=":
		return c >= 0
	case ">>":
		return c > 0
	}
	return false
}
