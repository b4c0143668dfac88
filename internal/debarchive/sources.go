// Package debarchive resolves and fetches Debian packages the way apt does:
// from the host's apt sources, through signed InRelease files and hashed
// Packages indices, to a verified .deb unpacked safely in Go.
package debarchive

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Source is one archive entry of the apt sources: a URI serving suites,
// whose InRelease files are signed by the keys in SignedBy.
type Source struct {
	URI        string   `json:"uri"`
	Suites     []string `json:"suites"`
	Components []string `json:"components"`
	// SignedBy is a keyring path as written on the host (resolved under the
	// sources' root dir), or an inline armored key block. Empty means the
	// host's trusted.gpg.d keyrings.
	SignedBy string `json:"signed_by,omitempty"`
	// Architectures limits the source, empty means any.
	Architectures []string `json:"architectures,omitempty"`
}

// ReadHostSources reads the apt sources under root (normally "/"): the
// deb822 files etc/apt/sources.list.d/*.sources and the one-line files
// etc/apt/sources.list and etc/apt/sources.list.d/*.list. Only binary
// ("deb") entries that are enabled are returned. Files with any other name
// (such as *.disabled) are ignored, as apt ignores them.
func ReadHostSources(root string) ([]Source, error) {
	var out []Source
	legacy := []string{filepath.Join(root, "etc/apt/sources.list")}
	lists, err := filepath.Glob(filepath.Join(root, "etc/apt/sources.list.d/*.list"))
	if err != nil {
		return nil, fmt.Errorf("list apt sources: %w", err)
	}
	legacy = append(legacy, lists...)
	for _, p := range legacy {
		data, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read apt sources %s: %w", p, err)
		}
		srcs, err := ParseOneLineSources(data)
		if err != nil {
			return nil, fmt.Errorf("parse apt sources %s: %w", p, err)
		}
		out = append(out, srcs...)
	}
	deb822, err := filepath.Glob(filepath.Join(root, "etc/apt/sources.list.d/*.sources"))
	if err != nil {
		return nil, fmt.Errorf("list apt sources: %w", err)
	}
	for _, p := range deb822 {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read apt sources %s: %w", p, err)
		}
		srcs, err := ParseDeb822Sources(data)
		if err != nil {
			return nil, fmt.Errorf("parse apt sources %s: %w", p, err)
		}
		out = append(out, srcs...)
	}
	return out, nil
}

// ParseDeb822Sources parses a deb822 .sources file.
func ParseDeb822Sources(data []byte) ([]Source, error) {
	stanzas, err := parseStanzas(bytes.NewReader(data), true)
	if err != nil {
		return nil, err
	}
	var out []Source
	for _, st := range stanzas {
		if strings.EqualFold(st["Enabled"], "no") {
			continue
		}
		if !slices.Contains(strings.Fields(st["Types"]), "deb") {
			continue
		}
		uris := strings.Fields(st["URIs"])
		suites := strings.Fields(st["Suites"])
		if len(uris) == 0 || len(suites) == 0 {
			return nil, fmt.Errorf("stanza without URIs or Suites")
		}
		for _, u := range uris {
			if strings.TrimRight(u, "/") == "" {
				return nil, fmt.Errorf("stanza with URI %q: use an absolute URI such as http://deb.debian.org/debian", u)
			}
			out = append(out, Source{
				URI:           strings.TrimRight(u, "/"),
				Suites:        suites,
				Components:    strings.Fields(st["Components"]),
				SignedBy:      strings.TrimSpace(st["Signed-By"]),
				Architectures: strings.Fields(st["Architectures"]),
			})
		}
	}
	return out, nil
}

// ParseOneLineSources parses the legacy format:
//
//	deb [arch=amd64 signed-by=/path] URI SUITE COMPONENT...
func ParseOneLineSources(data []byte) ([]Source, error) {
	var out []Source
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != "deb" {
			continue // deb-src and blank lines
		}
		fields = fields[1:]
		var src Source
		if len(fields) > 0 && strings.HasPrefix(fields[0], "[") {
			// Options run to the closing bracket, possibly across fields.
			var opts []string
			for len(fields) > 0 {
				f := fields[0]
				fields = fields[1:]
				end := strings.HasSuffix(f, "]")
				f = strings.Trim(f, "[]")
				if f != "" {
					opts = append(opts, f)
				}
				if end {
					break
				}
			}
			for _, o := range opts {
				k, v, _ := strings.Cut(o, "=")
				switch k {
				case "signed-by":
					src.SignedBy = v
				case "arch":
					src.Architectures = strings.Split(v, ",")
				}
			}
		}
		if len(fields) < 2 {
			return nil, fmt.Errorf("line %d: want URI and suite", n)
		}
		src.URI = strings.TrimRight(fields[0], "/")
		if src.URI == "" {
			return nil, fmt.Errorf("line %d: URI %q: use an absolute URI such as http://deb.debian.org/debian", n, fields[0])
		}
		src.Suites = []string{fields[1]}
		src.Components = fields[2:]
		out = append(out, src)
	}
	return out, sc.Err()
}

// WithMirror returns sources with their URIs replaced: mirror replaces every
// source's URI except security suites (SUITE-security), which securityMirror
// replaces. An empty mirror leaves the host's URI.
func WithMirror(sources []Source, mirror, securityMirror string) []Source {
	out := make([]Source, 0, len(sources))
	for _, s := range sources {
		s.Suites = slices.Clone(s.Suites)
		security := len(s.Suites) > 0 && strings.HasSuffix(s.Suites[0], "-security")
		switch {
		case security && securityMirror != "":
			s.URI = strings.TrimRight(securityMirror, "/")
		case !security && mirror != "":
			s.URI = strings.TrimRight(mirror, "/")
		}
		out = append(out, s)
	}
	return out
}

// stanza is one deb822 paragraph: field name → value, continuation lines
// joined with "\n".
type stanza map[string]string

// parseStanzas splits deb822 text into paragraphs. Comment lines (#) are
// allowed in sources files only.
func parseStanzas(r interface{ Read([]byte) (int, error) }, comments bool) ([]stanza, error) {
	var out []stanza
	err := eachStanza(r, comments, func(st stanza) error {
		out = append(out, st)
		return nil
	})
	return out, err
}

func eachStanza(r interface{ Read([]byte) (int, error) }, comments bool, fn func(stanza) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	cur := stanza{}
	last := ""
	flush := func() error {
		if len(cur) == 0 {
			return nil
		}
		err := fn(cur)
		cur, last = stanza{}, ""
		return err
	}
	for sc.Scan() {
		line := sc.Text()
		if comments && strings.HasPrefix(line, "#") {
			continue
		}
		if strings.TrimSpace(line) == "" {
			if err := flush(); err != nil {
				return err
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if last == "" {
				return fmt.Errorf("continuation line without a field: %q", line)
			}
			cur[last] += "\n" + strings.TrimSpace(line)
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("malformed line: %q", line)
		}
		last = strings.TrimSpace(k)
		cur[last] = strings.TrimSpace(v)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return flush()
}
