package toolingplan

import (
	"fmt"
	"strconv"
	"strings"
)

// version is a dotted numeric version; missing parts are "any" when it
// comes from a prefix ("20" means 20.x.y) and 0 otherwise.
type version []int

func parseVersion(s string) (version, error) {
	s = strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(s, "v"), "go"))
	if s == "" {
		return nil, fmt.Errorf("empty version")
	}
	var v version
	for _, part := range strings.Split(s, ".") {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("version %q: %q is not a number", s, part)
		}
		v = append(v, n)
	}
	return v, nil
}

func (v version) String() string {
	parts := make([]string, len(v))
	for i, n := range v {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ".")
}

// compare orders a and b, padding the shorter one with zeros.
func compare(a, b version) int {
	for i := range max(len(a), len(b)) {
		x, y := at(a, i), at(b, i)
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

func at(v version, i int) int {
	if i < len(v) {
		return v[i]
	}
	return 0
}

// hasPrefix says whether v starts with p's parts (p "3.11" holds 3.11.4).
func hasPrefix(v, p version) bool {
	if len(p) > len(v) {
		v = append(append(version{}, v...), make(version, len(p)-len(v))...)
	}
	for i := range p {
		if v[i] != p[i] {
			return false
		}
	}
	return true
}

// bump is the first version after the p-prefix series: 1.2 → 1.3.
func bump(p version, keep int) version {
	out := append(version{}, p[:keep]...)
	out[keep-1]++
	return out
}

// comparator is one condition on a version.
type comparator struct {
	op string // ">=", ">", "<=", "<", "=", "!=", "prefix"
	v  version
}

func (c comparator) ok(v version) bool {
	switch c.op {
	case ">=":
		return compare(v, c.v) >= 0
	case ">":
		return compare(v, c.v) > 0
	case "<=":
		return compare(v, c.v) <= 0
	case "<":
		return compare(v, c.v) < 0
	case "!=":
		return !hasPrefix(v, c.v)
	case "prefix":
		return hasPrefix(v, c.v)
	}
	return false
}

// Constraint is what a project file asks for: alternatives ("||") of
// conditions that must all hold.
type Constraint struct {
	text string
	alts [][]comparator
}

func (c Constraint) String() string { return c.text }

// Allows says whether an available version satisfies c.
func (c Constraint) Allows(v string) bool {
	pv, err := parseVersion(v)
	if err != nil {
		return false
	}
	for _, alt := range c.alts {
		all := true
		for _, cmp := range alt {
			if !cmp.ok(pv) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// ParseConstraint reads the version syntaxes project files use: exact or
// prefix ("20", "3.11", "1.22.3", "v20.11.1", "18.x", "3.11.*"),
// comparisons (">=3.10", "<4", "!=3.12.0", "==3.11"), npm's "^", "~", hyphen
// ranges and "||", PEP 440's "~=", and comma- or space-separated
// conjunctions. A minimum (go.mod's go line, Cargo's rust-version) is
// written ">=V" by the caller.
func ParseConstraint(s string) (Constraint, error) {
	c := Constraint{text: strings.TrimSpace(s)}
	if c.text == "" {
		return c, fmt.Errorf("empty version constraint")
	}
	for _, alt := range strings.Split(c.text, "||") {
		alt = strings.TrimSpace(alt)
		if lo, hi, ok := strings.Cut(alt, " - "); ok { // npm hyphen range
			l, err1 := parseVersion(lo)
			h, err2 := parseVersion(hi)
			if err1 != nil || err2 != nil {
				return c, fmt.Errorf("version range %q is not two versions", alt)
			}
			c.alts = append(c.alts, []comparator{{">=", l}, {"<=", h}})
			continue
		}
		var conds []comparator
		fields := strings.FieldsFunc(alt, func(r rune) bool { return r == ',' || r == ' ' })
		for i := 0; i < len(fields); i++ {
			f := fields[i]
			// ">= 3.10": an operator on its own field.
			if strings.Trim(f, "<>=!~^") == "" && i+1 < len(fields) {
				f += fields[i+1]
				i++
			}
			cs, err := parseOne(f)
			if err != nil {
				return c, fmt.Errorf("version constraint %q: %w", s, err)
			}
			conds = append(conds, cs...)
		}
		if len(conds) == 0 {
			return c, fmt.Errorf("version constraint %q has an empty alternative", s)
		}
		c.alts = append(c.alts, conds)
	}
	return c, nil
}

func parseOne(f string) ([]comparator, error) {
	for _, op := range []string{"~=", "===", "==", ">=", "<=", "!=", ">", "<", "=", "^", "~"} {
		if !strings.HasPrefix(f, op) {
			continue
		}
		rest := strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(f, op), ".*"), ".x")
		v, err := parseVersion(rest)
		if err != nil {
			return nil, err
		}
		switch op {
		case "~=": // PEP 440: ~=3.11 is >=3.11,<4; ~=3.11.2 is >=3.11.2,<3.12
			if len(v) < 2 {
				return nil, fmt.Errorf("%q: ~= needs at least two parts", f)
			}
			return []comparator{{">=", v}, {"<", bump(v, len(v)-1)}}, nil
		case "^": // npm: the leftmost non-zero part is fixed
			keep := 1
			for keep < len(v) && v[keep-1] == 0 {
				keep++
			}
			return []comparator{{">=", v}, {"<", bump(v, keep)}}, nil
		case "~": // npm: ~1.2.3 is >=1.2.3 <1.3; ~1 is 1.x
			keep := min(2, len(v))
			return []comparator{{">=", v}, {"<", bump(v, keep)}}, nil
		case "==", "===", "=":
			return []comparator{{"prefix", v}}, nil
		case "!=":
			return []comparator{{"!=", v}}, nil
		default:
			return []comparator{{op, v}}, nil
		}
	}
	if f == "*" || f == "x" || f == "latest" || f == "stable" || f == "lts/*" || f == "node" {
		return nil, fmt.Errorf("%q names no version number: write one (like 20 or >=20)", f)
	}
	rest := strings.TrimSuffix(strings.TrimSuffix(f, ".*"), ".x")
	v, err := parseVersion(rest)
	if err != nil {
		return nil, err
	}
	return []comparator{{"prefix", v}}, nil
}
