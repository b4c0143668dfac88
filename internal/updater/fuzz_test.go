package updater

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzParseManifest feeds hostile manifests to ParseManifest. No panic; an
// accepted manifest satisfies every rule the parser promises (schema,
// valid and unique versions, all three URLs, latest among the releases)
// and survives re-serialisation unchanged.
func FuzzParseManifest(f *testing.F) {
	good := `{"schema":1,"latest":"v0.2.0","releases":[` +
		`{"version":"v0.2.0","tarball":"v0.2.0/banger_v0.2.0_linux_amd64.tar.gz","sha256sums":"v0.2.0/SHA256SUMS","signature":"v0.2.0/SHA256SUMS.sig","published_at":"2026-01-02T03:04:05Z"},` +
		`{"version":"v0.1.0","tarball":"https://example.org/t.tgz","sha256sums":"https://example.org/S","signature":"https://example.org/S.sig"}]}`
	for _, s := range []string{
		good,
		good + `{"schema":1}`, // trailing document
		`{"schema":2,"latest":"v1","releases":[]}`,
		`{"schema":1,"latest":"../../etc","releases":[{"version":"../../etc","tarball":"a","sha256sums":"b","signature":"c"}]}`,
		`{"schema":1,"latest":"v1.0.0","releases":[{"version":"v1.0.0","tarball":"a","sha256sums":"b","signature":"c"},{"version":"v1.0.0","tarball":"a","sha256sums":"b","signature":"c"}]}`,
		`{"schema":1,"latest":"v9.9.9","releases":[{"version":"v1.0.0","tarball":"a","sha256sums":"b","signature":"c"}]}`,
		`{"schema":1e400}`,
		`[` + strings.Repeat(`[`, 10000),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			if m != nil {
				t.Fatalf("error %v came with a manifest", err)
			}
			return
		}
		if m.Schema != ManifestSchema {
			t.Fatalf("accepted schema %d", m.Schema)
		}
		seen := map[string]bool{}
		for _, r := range m.Releases {
			if !ValidVersion(r.Version) || seen[r.Version] || r.Tarball == "" || r.SHA256Sums == "" || r.Signature == "" {
				t.Fatalf("accepted a bad release %+v", r)
			}
			seen[r.Version] = true
		}
		if !m.Has(m.Latest) {
			t.Fatalf("accepted latest %q not among the releases", m.Latest)
		}
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("re-encode an accepted manifest: %v", err)
		}
		m2, err := ParseManifest(again)
		if err != nil {
			t.Fatalf("re-parse an accepted manifest: %v\n%s", err, again)
		}
		if again2, _ := json.Marshal(m2); string(again2) != string(again) {
			t.Fatalf("manifest changed on a round trip:\n%s\n%s", again, again2)
		}
	})
}

// FuzzParseSHA256SUMS feeds hostile SHA256SUMS documents (the signed file a
// release is checked against) to ParseSHA256SUMS and ReleasedAt. No panic;
// accepted names are plain file names with a 64-digit lower-case hex hash;
// re-serialising the parsed sums (with the release date) parses back to
// the same map and date.
func FuzzParseSHA256SUMS(f *testing.F) {
	h := strings.Repeat("ab", 32)
	for _, s := range []string{
		SumsHeader(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) + h + "  banger_v0.2.0_linux_amd64.tar.gz\n",
		h + " *bin\r\n# comment\n\n" + strings.ToUpper(h) + "  other\n",
		h + "  ../../etc/passwd\n",
		h + "  a\n" + h + "  a\n",
		"# released: 2026-01-02T03:04:05Z\n# released: 2027-01-02T03:04:05Z\n",
		"# released: yesterday\n",
		"zz" + h[2:] + "  x\n",
		h + "\n",
		strings.Repeat("x", 70000),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sums, err := ParseSHA256SUMS(data)
		at, dated, dateErr := ReleasedAt(data)
		if err != nil {
			return
		}
		for name, sum := range sums {
			if name == "" || strings.ContainsAny(name, "/\\") {
				t.Fatalf("accepted unsafe name %q", name)
			}
			if len(sum) != 64 || strings.Trim(sum, "0123456789abcdef") != "" {
				t.Fatalf("accepted hash %q for %q", sum, name)
			}
		}
		if dateErr != nil {
			return
		}
		var b strings.Builder
		if dated {
			b.WriteString(releasedPrefix + at.Format(time.RFC3339Nano) + "\n")
		}
		names := slices.Sorted(maps.Keys(sums))
		for _, name := range names {
			fmt.Fprintf(&b, "%s *%s\n", sums[name], name) // binary mode keeps a leading space or star
		}
		again, err := ParseSHA256SUMS([]byte(b.String()))
		if err != nil || !maps.Equal(again, sums) {
			t.Fatalf("sums changed on a round trip (err %v):\n%q\n%q", err, data, b.String())
		}
		at2, dated2, err := ReleasedAt([]byte(b.String()))
		if err != nil || dated2 != dated || !at2.Equal(at) {
			t.Fatalf("release date changed on a round trip: %v %v -> %v %v (%v)", at, dated, at2, dated2, err)
		}
	})
}
