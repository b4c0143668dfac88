package updater

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// tarEntry is one entry of a hand-made tarball.
type tarEntry struct {
	Name     string
	Body     string
	Type     byte // tar.TypeReg when 0
	Mode     int64
	Linkname string
}

func makeTarball(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		typ := e.Type
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.Mode
		if mode == 0 {
			mode = 0o644
		}
		hdr := &tar.Header{Name: e.Name, Typeflag: typ, Mode: mode, Linkname: e.Linkname, ModTime: time.Unix(0, 0)}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.Body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// releaseBins returns the four binaries of a release as tar entries.
func releaseBins(banger, bangerd, agent, helper string) []tarEntry {
	return []tarEntry{
		{Name: AgentName, Body: agent, Mode: 0o600},
		{Name: HelperName, Body: helper, Mode: 0o640},
		{Name: BangerdName, Body: bangerd, Mode: 0o644},
		{Name: BangerName, Body: banger, Mode: 0o700},
	}
}

// fakeBangerd is a shell script standing in for bangerd: it answers
// --version with version and exits checkRC for --check-migrations.
func fakeBangerd(version string, checkRC int, marker string) string {
	return fmt.Sprintf(`#!/bin/sh
# %s
case "$1" in
--version) echo "bangerd %s (commit c0ffee, built 2026-05-01T00:00:00Z, go1.26.8)" ;;
--check-migrations) echo "store schema check" ; exit %d ;;
*) exit 1 ;;
esac
`, marker, version, checkRC)
}

func newKey(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func signBlob(t *testing.T, key *ecdsa.PrivateKey, blob []byte) []byte {
	t.Helper()
	d := sha256.Sum256(blob)
	sig, err := ecdsa.SignASN1(rand.Reader, key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return []byte(base64.StdEncoding.EncodeToString(sig))
}

// releaseServer serves a manifest and release artefacts from memory on
// 127.0.0.1 and counts requests per path.
type releaseServer struct {
	t      *testing.T
	key    *ecdsa.PrivateKey
	pub    []byte
	srv    *httptest.Server
	mu     sync.Mutex
	files  map[string][]byte
	hits   map[string]int
	rels   []Release
	latest string
}

func newReleaseServer(t *testing.T) *releaseServer {
	rs := &releaseServer{t: t, files: map[string][]byte{}, hits: map[string]int{}}
	rs.key, rs.pub = newKey(t)
	rs.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rs.mu.Lock()
		rs.hits[r.URL.Path]++
		body, ok := rs.files[r.URL.Path]
		rs.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(body)
	}))
	t.Cleanup(rs.srv.Close)
	return rs
}

func (rs *releaseServer) manifestURL() string { return rs.srv.URL + "/manifest.json" }

func (rs *releaseServer) set(path string, body []byte) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.files[path] = body
}

func (rs *releaseServer) get(path string) []byte {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]byte(nil), rs.files[path]...)
}

func (rs *releaseServer) hitsOf(path string) int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.hits[path]
}

func (rs *releaseServer) totalHits() int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	n := 0
	for _, c := range rs.hits {
		n += c
	}
	return n
}

// fixtureReleasedAt is the signed release date of every fixture release.
var fixtureReleasedAt = time.Date(2026, 4, 30, 9, 15, 0, 0, time.UTC)

// addRelease publishes version with the given tarball, signed SHA256SUMS,
// and a manifest entry with relative URLs; latest makes it the latest.
func (rs *releaseServer) addRelease(version string, tarball []byte, latest bool) {
	name := TarballName(version)
	sum := sha256.Sum256(tarball)
	sums := []byte(SumsHeader(fixtureReleasedAt) + hex.EncodeToString(sum[:]) + "  " + name + "\n")
	rs.set("/"+version+"/"+name, tarball)
	rs.set("/"+version+"/SHA256SUMS", sums)
	rs.set("/"+version+"/SHA256SUMS.sig", signBlob(rs.t, rs.key, sums))
	rs.rels = append(rs.rels, Release{
		Version: version, Tarball: version + "/" + name,
		SHA256Sums: version + "/SHA256SUMS", Signature: version + "/SHA256SUMS.sig",
		PublishedAt: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC),
	})
	if latest || rs.latest == "" {
		rs.latest = version
	}
	m, err := json.Marshal(Manifest{Schema: 1, Latest: rs.latest, Releases: rs.rels})
	if err != nil {
		rs.t.Fatal(err)
	}
	rs.set("/manifest.json", m)
}

func flipByte(b []byte, i int) []byte {
	out := append([]byte(nil), b...)
	out[i] ^= 0x01
	return out
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
