package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/template"

	"github.com/bangerdev/banger/internal/termsafe"
)

// formatFlagHelp is the --format flag's help, shared by the listings.
const formatFlagHelp = "print each item with a Go template, like docker (e.g. '{{.Name}} {{.IP}}'; {{json .}} for JSON)"

// parseFormat compiles a --format template; a bad one is a usage error
// that says what is wrong.
func parseFormat(text string) (*template.Template, error) {
	t, err := template.New("format").Funcs(template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
		"upper": strings.ToUpper,
		"lower": strings.ToLower,
		"join":  strings.Join,
	}).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, &UsageError{Err: fmt.Errorf("--format: %w (example: --format '{{.Name}}')", err)}
	}
	return t, nil
}

// printFormatted writes one line per item; every line is made inert for
// the terminal (fields can carry guest text).
func printFormatted[T any](w io.Writer, t *template.Template, items []T) error {
	for _, it := range items {
		var buf bytes.Buffer
		if err := t.Execute(&buf, it); err != nil {
			return &UsageError{Err: fmt.Errorf("--format: %w", err)}
		}
		if _, err := fmt.Fprintln(w, termsafe.Text(strings.TrimSuffix(buf.String(), "\n"))); err != nil {
			return err
		}
	}
	return nil
}

// sizeShort renders bytes compactly for a table cell: 512M, 1G, 4.5G.
func sizeShort(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%dB", n)
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if v == float64(int64(v)) || v >= 100 {
		return fmt.Sprintf("%d%c", int64(v+0.5), units[i])
	}
	return fmt.Sprintf("%.1f%c", v, units[i])
}
