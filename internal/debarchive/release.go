package debarchive

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
)

// Sentinel errors callers and tests can match with errors.Is.
var (
	ErrBadSignature = errors.New("InRelease signature does not verify")
	ErrExpired      = errors.New("InRelease is past its Valid-Until date")
	ErrNotFound     = errors.New("package not found")
	ErrNoIndex      = errors.New("InRelease lists no usable Packages index")
	ErrUnsafePath   = errors.New("archive entry escapes the extraction root")
)

// indexFile is one line of an InRelease SHA256 section.
type indexFile struct {
	Path   string
	Size   int64
	SHA256 string
}

// release is the verified content of one suite's InRelease.
type release struct {
	Suite, Codename string
	ValidUntil      time.Time
	Files           map[string]indexFile // by path relative to dists/SUITE
}

// loadKeyring reads the keys named by a Signed-By value: a file (binary
// or armored keyring) under root, or an inline armored key block. An empty
// value means the host's trusted.gpg.d keyrings, as apt would use.
func loadKeyring(root, signedBy string) (openpgp.EntityList, error) {
	if strings.Contains(signedBy, "-----BEGIN PGP PUBLIC KEY BLOCK-----") {
		// deb822 continuation lines carry a lone "." for blank lines.
		text := strings.ReplaceAll("\n"+signedBy+"\n", "\n.\n", "\n\n")
		return openpgp.ReadArmoredKeyRing(strings.NewReader(strings.TrimSpace(text)))
	}
	var files, fingerprints []string
	if signedBy != "" && !strings.ContainsAny(signedBy, "/.") {
		// Signed-By may name key fingerprints of the host's trusted keys.
		fingerprints = strings.FieldsFunc(strings.ToUpper(signedBy), func(r rune) bool { return r == ',' || r == ' ' || r == '\n' })
		signedBy = ""
	}
	if signedBy == "" {
		for _, pat := range []string{"etc/apt/trusted.gpg", "etc/apt/trusted.gpg.d/*.gpg", "etc/apt/trusted.gpg.d/*.asc"} {
			m, _ := filepath.Glob(filepath.Join(root, pat))
			files = append(files, m...)
		}
	} else {
		// Signed-By may list several keyrings, comma or space separated.
		for _, f := range strings.FieldsFunc(signedBy, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
			files = append(files, filepath.Join(root, f))
		}
	}
	var all openpgp.EntityList
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read keyring: %w", err)
		}
		var ents openpgp.EntityList
		if bytes.Contains(data[:min(len(data), 64)], []byte("-----BEGIN")) {
			ents, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(data))
		} else {
			ents, err = openpgp.ReadKeyRing(bytes.NewReader(data))
		}
		if err != nil {
			return nil, fmt.Errorf("parse keyring %s: %w", f, err)
		}
		all = append(all, ents...)
	}
	if len(fingerprints) > 0 {
		var kept openpgp.EntityList
		for _, e := range all {
			fp := strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint))
			for _, want := range fingerprints {
				if strings.HasSuffix(fp, strings.TrimSuffix(want, "!")) {
					kept = append(kept, e)
					break
				}
			}
		}
		all = kept
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("no keys found for Signed-By %q", signedBy)
	}
	return all, nil
}

// verifyInRelease checks the clear signature of an InRelease file against
// keyring and returns the parsed signed text. Nothing outside the signed
// block is ever looked at.
func verifyInRelease(data []byte, keyring openpgp.EntityList, now time.Time) (*release, error) {
	block, _ := clearsign.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: no clear-signed block", ErrBadSignature)
	}
	if _, err := block.VerifySignature(keyring, nil); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	rel, err := parseRelease(block.Plaintext)
	if err != nil {
		return nil, err
	}
	if !rel.ValidUntil.IsZero() && now.After(rel.ValidUntil) {
		return nil, fmt.Errorf("%w (%s)", ErrExpired, rel.ValidUntil.Format(time.RFC1123))
	}
	return rel, nil
}

func parseRelease(text []byte) (*release, error) {
	stanzas, err := parseStanzas(bytes.NewReader(text), false)
	if err != nil {
		return nil, fmt.Errorf("parse InRelease: %w", err)
	}
	if len(stanzas) == 0 {
		return nil, fmt.Errorf("parse InRelease: empty")
	}
	st := stanzas[0]
	rel := &release{Suite: st["Suite"], Codename: st["Codename"], Files: map[string]indexFile{}}
	if v := st["Valid-Until"]; v != "" {
		t, err := parseReleaseDate(v)
		if err != nil {
			return nil, fmt.Errorf("parse InRelease Valid-Until %q: %w", v, err)
		}
		rel.ValidUntil = t
	}
	for _, line := range strings.Split(st["SHA256"], "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		size, err := strconv.ParseInt(f[1], 10, 64)
		if _, herr := hex.DecodeString(f[0]); err != nil || herr != nil || size < 0 || len(f[0]) != 64 {
			return nil, fmt.Errorf("parse InRelease SHA256 line %q", line)
		}
		rel.Files[f[2]] = indexFile{Path: f[2], Size: size, SHA256: strings.ToLower(f[0])}
	}
	if len(rel.Files) == 0 {
		return nil, fmt.Errorf("parse InRelease: no SHA256 section")
	}
	return rel, nil
}

func parseReleaseDate(v string) (time.Time, error) {
	for _, layout := range []string{time.RFC1123, time.RFC1123Z, "Mon, 2 Jan 2006 15:04:05 MST", "Mon, 2 Jan 2006 15:04:05 -0700"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("unknown date format")
}
