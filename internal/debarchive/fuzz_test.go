package debarchive

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// fuzzKey is a signing key derived from a fixed seed, so that committed
// seed corpora signed with it still verify on every run.
func fuzzKey(t testing.TB, seed byte) *openpgp.Entity {
	t.Helper()
	epoch := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg := &packet.Config{
		Algorithm: packet.PubKeyAlgoEdDSA,
		Rand:      rand.NewChaCha8([32]byte{seed}),
		Time:      func() time.Time { return epoch },
	}
	e, err := openpgp.NewEntity("fuzz", "test", "fuzz@example.org", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

const fuzzRelease = "Origin: Debian\nSuite: stable\nCodename: bookworm\n" +
	"Valid-Until: Sat, 01 Jan 2067 00:00:00 UTC\nSHA256:\n" +
	" 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef 1234 main/binary-amd64/Packages.xz\n" +
	" 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef 99 main/binary-amd64/Packages\n"

// canonicalText is what a clear signature covers: lines without trailing
// whitespace, joined by "\n".
func canonicalText(b []byte) string {
	lines := strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t\r")
	}
	return strings.TrimRight(strings.Join(lines, "\n"), "\n")
}

// FuzzVerifyInRelease feeds hostile InRelease files to verifyInRelease
// with a keyring of one fixed key. No panic; only text that key signed is
// ever accepted (no byte outside the signed block counts), what is
// returned is exactly the parse of that signed text, and a keyring of
// another key accepts nothing.
func FuzzVerifyInRelease(f *testing.F) {
	key, other := fuzzKey(f, 1), fuzzKey(f, 2)
	signed, signedOther := map[string]bool{}, map[string]bool{}
	sign := func(text string) []byte {
		signed[canonicalText([]byte(text))] = true
		return clearSign(f, key, text)
	}
	signOther := func(text string) []byte {
		signedOther[canonicalText([]byte(text))] = true
		return clearSign(f, other, text)
	}
	good := sign(fuzzRelease)
	f.Add(good)
	f.Add(sign(strings.ReplaceAll(fuzzRelease, "2067", "2001"))) // expired
	f.Add(sign("Suite: stable\nSHA256:\n zz 1 x\n"))             // malformed hash line
	f.Add(sign("- Suite: dash-escaped\n\n\nSuite: second stanza\n"))
	// Unsigned text around a good block, and a second block after it.
	f.Add(append([]byte("Suite: evil\nSHA256:\n "+strings.Repeat("0", 64)+" 1 evil\n\n"), good...))
	f.Add(append(append([]byte{}, good...), signOther(strings.ReplaceAll(fuzzRelease, "stable", "evil"))...))
	f.Add(signOther("Suite: other\nSHA256:\n " + strings.Repeat("a", 64) + " 1 x\n")) // right text, wrong key
	f.Add(bytes.Replace(good, []byte("bookworm"), []byte("trixie!!"), 1))
	f.Add([]byte("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n" + fuzzRelease))
	keyring, wrong := openpgp.EntityList{key}, openpgp.EntityList{other}
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		rel, err := verifyInRelease(data, keyring, now)
		if _, werr := verifyInRelease(data, wrong, now); werr == nil {
			if block, _ := clearsign.Decode(data); block == nil || !signedOther[canonicalText(block.Plaintext)] {
				t.Fatal("a keyring without the signing key accepted the file")
			}
		}
		if err != nil {
			if rel != nil {
				t.Fatalf("error %v came with a release", err)
			}
			if block, _ := clearsign.Decode(data); block != nil && signedOther[canonicalText(block.Plaintext)] && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("text signed by another key failed with %v, not ErrBadSignature", err)
			}
			return
		}
		block, _ := clearsign.Decode(data)
		if block == nil {
			t.Fatal("accepted a file without a clear-signed block")
		}
		if !signed[canonicalText(block.Plaintext)] {
			t.Fatalf("accepted text the key never signed:\n%s", block.Plaintext)
		}
		want, perr := parseRelease(block.Plaintext)
		if perr != nil || !reflect.DeepEqual(rel, want) {
			t.Fatalf("verified release %+v differs from its signed text's %+v (%v)", rel, want, perr)
		}
		if !rel.ValidUntil.IsZero() && now.After(rel.ValidUntil) {
			t.Fatalf("accepted an expired release (%s)", rel.ValidUntil)
		}
	})
}

// FuzzParseRelease feeds hostile Release text to parseRelease: no panic;
// every accepted index file has a non-negative size and a 64-digit
// lower-case hex SHA256 and is keyed by its own path.
func FuzzParseRelease(f *testing.F) {
	f.Add([]byte(fuzzRelease))
	f.Add([]byte("Suite: s\nValid-Until: tomorrow\nSHA256:\n x 1 y\n"))
	f.Add([]byte("SHA256:\n " + strings.Repeat("Z", 64) + " 1 Packages\n"))
	f.Add([]byte("SHA256:\n " + strings.Repeat("a", 64) + " -1 Packages\n"))
	f.Add([]byte(" continuation first\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rel, err := parseRelease(data)
		if err != nil {
			return
		}
		if len(rel.Files) == 0 {
			t.Fatal("accepted a release without index files")
		}
		for p, fi := range rel.Files {
			if fi.Path != p || fi.Size < 0 || len(fi.SHA256) != 64 || strings.Trim(fi.SHA256, "0123456789abcdef") != "" {
				t.Fatalf("accepted index file %q: %+v", p, fi)
			}
		}
	})
}

// FuzzParsePackages feeds hostile Packages indices to parsePackages: no
// panic; every entry is filed under its own non-empty name and carries the
// source it was read from.
func FuzzParsePackages(f *testing.F) {
	f.Add([]byte("Package: a\nVersion: 1\nArchitecture: amd64\nPre-Depends: c\nDepends: b (>= 1),\n d\nFilename: pool/a.deb\nSize: 10\nSHA256: AB\n\nPackage: a\nVersion: 2\n"))
	f.Add([]byte("Package: ../../x\nFilename: /etc/passwd\nSize: -5\n"))
	f.Add([]byte("\tcontinuation\n"))
	f.Add([]byte("no colon\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, err := parsePackages(bytes.NewReader(data), "http://deb.example", "stable")
		if err != nil {
			return
		}
		for name, pkgs := range idx {
			for _, p := range pkgs {
				if name == "" || p.Name != name || p.URI != "http://deb.example" || p.Suite != "stable" || p.SHA256 != strings.ToLower(p.SHA256) {
					t.Fatalf("entry %q: %+v", name, p)
				}
			}
		}
	})
}

// deb822 renders sources as a deb822 .sources file.
func deb822(srcs []Source) string {
	var b strings.Builder
	for _, s := range srcs {
		fmt.Fprintf(&b, "Types: deb\nURIs: %s\nSuites: %s\nComponents: %s\n", s.URI, strings.Join(s.Suites, " "), strings.Join(s.Components, " "))
		if s.SignedBy != "" {
			fmt.Fprintf(&b, "Signed-By: %s\n", strings.ReplaceAll(s.SignedBy, "\n", "\n "))
		}
		if len(s.Architectures) > 0 {
			fmt.Fprintf(&b, "Architectures: %s\n", strings.Join(s.Architectures, " "))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// FuzzParseDeb822Sources feeds hostile deb822 sources to
// ParseDeb822Sources: no panic; every source has a URI and a suite and
// no field with blanks; and the sources, written back as deb822, parse to
// the same sources.
func FuzzParseDeb822Sources(f *testing.F) {
	f.Add([]byte("Types: deb deb-src\nURIs: http://deb.debian.org/debian/ http://m.example/d\nSuites: bookworm bookworm-updates\nComponents: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n# comment\nTypes: deb\nURIs: http://security.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\nEnabled: no\n"))
	f.Add([]byte("Types: deb\nURIs: http://x\nSuites: s\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n -----END PGP PUBLIC KEY BLOCK-----\nArchitectures: amd64 arm64\n"))
	f.Add([]byte("Types: deb\nURIs: /\nSuites: s\n"))
	f.Add([]byte("Types: deb\nSuites: s\n"))
	f.Add([]byte(" continuation\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		srcs, err := ParseDeb822Sources(data)
		if err != nil {
			return
		}
		for _, s := range srcs {
			checkSource(t, s)
		}
		again, err := ParseDeb822Sources([]byte(deb822(srcs)))
		if err != nil || !reflect.DeepEqual(again, srcs) {
			t.Fatalf("sources changed on a round trip (err %v):\n%+v\n%+v", err, srcs, again)
		}
	})
}

func checkSource(t *testing.T, s Source) {
	t.Helper()
	if s.URI == "" || len(s.Suites) == 0 {
		t.Fatalf("accepted a source without a URI or suite: %+v", s)
	}
	for _, v := range append(append([]string{s.URI}, s.Suites...), s.Components...) {
		if v == "" || strings.ContainsAny(v, " \t\n") {
			t.Fatalf("accepted field %q in %+v", v, s)
		}
	}
}

// FuzzParseOneLineSources feeds hostile sources.list lines to
// ParseOneLineSources: no panic; every source has a URI and a suite and no
// field with blanks; sources whose options can be written back parse to
// the same sources.
func FuzzParseOneLineSources(f *testing.F) {
	f.Add([]byte("deb http://deb.debian.org/debian bookworm main contrib\n# deb http://x y z\ndeb-src http://a b c\n"))
	f.Add([]byte("deb [ arch=amd64,arm64 signed-by=/usr/share/keyrings/k.gpg ] http://x/ bookworm main\n"))
	f.Add([]byte("deb [signed-by=/k] [b c\n"))
	f.Add([]byte("deb / s\n"))
	f.Add([]byte("deb [arch=amd64\n"))
	f.Add([]byte("deb http://x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		srcs, err := ParseOneLineSources(data)
		if err != nil {
			return
		}
		var b strings.Builder
		for _, s := range srcs {
			checkSource(t, s)
			if len(s.Suites) != 1 {
				t.Fatalf("a one-line source with %d suites", len(s.Suites))
			}
			opts := []string{}
			if s.SignedBy != "" {
				opts = append(opts, "signed-by="+s.SignedBy)
			}
			if s.Architectures != nil {
				opts = append(opts, "arch="+strings.Join(s.Architectures, ","))
			}
			for _, o := range opts {
				if strings.ContainsAny(o, "[]# \t\r\v\f") || strings.ContainsFunc(o, func(r rune) bool { return r > 0x7f }) {
					return // not representable on one line: no round trip to check
				}
			}
			fmt.Fprintf(&b, "deb [%s] %s %s %s\n", strings.Join(opts, " "), s.URI, s.Suites[0], strings.Join(s.Components, " "))
		}
		again, err := ParseOneLineSources([]byte(b.String()))
		if err != nil || !reflect.DeepEqual(again, srcs) {
			t.Fatalf("sources changed on a round trip (err %v):\n%q\n%+v\n%+v", err, b.String(), srcs, again)
		}
	})
}
