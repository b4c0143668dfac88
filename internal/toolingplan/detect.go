// Package toolingplan reads what a project asks of its tools (go.mod,
// package.json engines and .nvmrc, Cargo.toml and rust-toolchain.toml,
// pyproject.toml and .python-version, .tool-versions, mise.toml, a
// Makefile's commands) and plans how a Debian image satisfies each: a
// package of the image's suite whose version fits, or a plain statement
// that none does, with both versions. Nothing is silently downgraded.
//
// The package is pure: Detect reads an fs.FS, Make asks an Index.
package toolingplan

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Request is one tool a project file asks for.
type Request struct {
	Tool    string `json:"tool"`    // canonical: go, node, python, rust, or a command name
	Version string `json:"version"` // as asked, in ParseConstraint's syntax; "" for any
	Source  string `json:"source"`  // file and field: "go.mod (go)"
}

// maxFile bounds what is read of one project file.
const maxFile = 1 << 20

// aliases maps asdf/mise plugin names to canonical tools.
var aliases = map[string]string{
	"golang": "go", "go": "go",
	"nodejs": "node", "node": "node",
	"python": "python", "python3": "python",
	"rust": "rust",
}

func canonical(tool string) string {
	if c, ok := aliases[tool]; ok {
		return c
	}
	return tool
}

// Detect reads the project files at fsys's root. A file that is present but
// unreadable or malformed is an error naming it.
func Detect(fsys fs.FS) ([]Request, error) {
	var out []Request
	for _, d := range detectors {
		data, err := readSmall(fsys, d.file)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		reqs, err := d.parse(data)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", d.file, err)
		}
		out = append(out, reqs...)
	}
	return out, nil
}

func readSmall(fsys fs.FS, name string) ([]byte, error) {
	fi, err := fs.Stat(fsys, name)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	if fi.Size() > maxFile {
		return nil, fmt.Errorf("%s is %d bytes, over %d", name, fi.Size(), maxFile)
	}
	return fs.ReadFile(fsys, name)
}

var detectors = []struct {
	file  string
	parse func([]byte) ([]Request, error)
}{
	{"go.mod", parseGoMod},
	{"package.json", parsePackageJSON},
	{".nvmrc", func(b []byte) ([]Request, error) { return oneLine("node", ".nvmrc", b) }},
	{"Cargo.toml", parseCargo},
	{"rust-toolchain.toml", parseRustToolchain},
	{"rust-toolchain", func(b []byte) ([]Request, error) { return oneLine("rust", "rust-toolchain", b) }},
	{"pyproject.toml", parsePyproject},
	{".python-version", func(b []byte) ([]Request, error) { return oneLine("python", ".python-version", b) }},
	{".tool-versions", parseToolVersions},
	{"mise.toml", parseMise},
	{".mise.toml", parseMise},
	{"Makefile", parseMakefile},
}

// parseGoMod reads the go and toolchain directives (each a single line at
// the top level of go.mod).
func parseGoMod(b []byte) ([]Request, error) {
	var out []Request
	for line := range strings.SplitSeq(string(b), "\n") {
		line, _, _ = strings.Cut(line, "//")
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		switch f[0] {
		case "go":
			out = append(out, Request{Tool: "go", Version: ">=" + f[1], Source: "go.mod (go)"})
		case "toolchain":
			if v := strings.TrimPrefix(f[1], "go"); v != "default" {
				out = append(out, Request{Tool: "go", Version: ">=" + v, Source: "go.mod (toolchain)"})
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no go directive")
	}
	return out, nil
}

func parsePackageJSON(b []byte) ([]Request, error) {
	var pj struct {
		Engines map[string]string `json:"engines"`
	}
	if err := json.Unmarshal(b, &pj); err != nil {
		return nil, err
	}
	var out []Request
	for _, tool := range sortedKeys(pj.Engines) {
		out = append(out, Request{Tool: canonical(tool), Version: pj.Engines[tool], Source: "package.json (engines." + tool + ")"})
	}
	return out, nil
}

func oneLine(tool, file string, b []byte) ([]Request, error) {
	for line := range strings.SplitSeq(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		return []Request{{Tool: tool, Version: line, Source: file}}, nil
	}
	return nil, fmt.Errorf("no version in it")
}

func parseCargo(b []byte) ([]Request, error) {
	var c struct {
		Package struct {
			RustVersion string `toml:"rust-version"`
		} `toml:"package"`
		Workspace struct {
			Package struct {
				RustVersion string `toml:"rust-version"`
			} `toml:"package"`
		} `toml:"workspace"`
	}
	if err := toml.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	switch {
	case c.Package.RustVersion != "":
		return []Request{{Tool: "rust", Version: ">=" + c.Package.RustVersion, Source: "Cargo.toml (package.rust-version)"}}, nil
	case c.Workspace.Package.RustVersion != "":
		return []Request{{Tool: "rust", Version: ">=" + c.Workspace.Package.RustVersion, Source: "Cargo.toml (workspace.package.rust-version)"}}, nil
	}
	return []Request{{Tool: "rust", Source: "Cargo.toml"}}, nil
}

func parseRustToolchain(b []byte) ([]Request, error) {
	var t struct {
		Toolchain struct {
			Channel string `toml:"channel"`
		} `toml:"toolchain"`
	}
	if err := toml.Unmarshal(b, &t); err != nil {
		return nil, err
	}
	if t.Toolchain.Channel == "" {
		return nil, fmt.Errorf("no toolchain.channel")
	}
	return []Request{{Tool: "rust", Version: t.Toolchain.Channel, Source: "rust-toolchain.toml (toolchain.channel)"}}, nil
}

func parsePyproject(b []byte) ([]Request, error) {
	var p struct {
		Project struct {
			RequiresPython string `toml:"requires-python"`
		} `toml:"project"`
		Tool struct {
			Poetry struct {
				Dependencies map[string]any `toml:"dependencies"`
			} `toml:"poetry"`
		} `toml:"tool"`
	}
	if err := toml.Unmarshal(b, &p); err != nil {
		return nil, err
	}
	if p.Project.RequiresPython != "" {
		return []Request{{Tool: "python", Version: p.Project.RequiresPython, Source: "pyproject.toml (project.requires-python)"}}, nil
	}
	if v, ok := p.Tool.Poetry.Dependencies["python"].(string); ok {
		return []Request{{Tool: "python", Version: v, Source: "pyproject.toml (tool.poetry.dependencies.python)"}}, nil
	}
	return []Request{{Tool: "python", Source: "pyproject.toml"}}, nil
}

func parseToolVersions(b []byte) ([]Request, error) {
	var out []Request
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("line %q names no version", line)
		}
		// Later fields are fallbacks; the first is what is asked for.
		out = append(out, Request{Tool: canonical(f[0]), Version: f[1], Source: ".tool-versions (" + f[0] + ")"})
	}
	return out, sc.Err()
}

func parseMise(b []byte) ([]Request, error) {
	var m struct {
		Tools map[string]any `toml:"tools"`
	}
	if err := toml.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	var out []Request
	for _, tool := range sortedKeys(m.Tools) {
		var v string
		switch x := m.Tools[tool].(type) {
		case string:
			v = x
		case []any:
			if len(x) > 0 {
				v, _ = x[0].(string)
			}
		case map[string]any:
			v, _ = x["version"].(string)
		}
		out = append(out, Request{Tool: canonical(tool), Version: v, Source: "mise.toml (tools." + tool + ")"})
	}
	return out, nil
}

// makeTools are commands a Makefile recipe obviously needs.
var makeTools = []string{"go", "node", "npm", "npx", "yarn", "cargo", "rustc", "python3", "python", "pip", "pip3",
	"gcc", "cc", "clang", "protoc", "jq", "git", "curl", "docker", "shellcheck", "zip", "unzip", "rsync"}

var recipeWord = regexp.MustCompile(`^\t[@+-]*\s*([A-Za-z0-9_.-]+)`)

func parseMakefile(b []byte) ([]Request, error) {
	seen := map[string]bool{}
	var out []Request
	for line := range strings.SplitSeq(string(b), "\n") {
		m := recipeWord.FindStringSubmatch(line)
		if m == nil || seen[m[1]] || !slices.Contains(makeTools, m[1]) {
			continue
		}
		seen[m[1]] = true
		out = append(out, Request{Tool: canonical(m[1]), Source: "Makefile (recipe runs " + m[1] + ")"})
	}
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
