package updater

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestCheckURL(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://releases.example.org/manifest.json": true,
		"http://127.0.0.1:8080/manifest.json":        true,
		"http://127.9.9.9/m.json":                    true,
		"http://[::1]:9/m.json":                      true,
		"http://localhost/m.json":                    true,
		"http://LOCALHOST/m.json":                    true,
		"http://releases.example.org/manifest.json":  false,
		"http://10.0.0.1/m.json":                     false,
		"http://127.0.0.1.evil.example/m.json":       false,
		"http://localhost.evil.example/m.json":       false,
		"ftp://127.0.0.1/m.json":                     false,
		"file:///etc/passwd":                         false,
		"https://user:pw@releases.example.org/m":     false,
		"/relative/m.json":                           false,
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		err = CheckURL(u)
		if (err == nil) != ok {
			t.Errorf("CheckURL(%s) = %v, want ok=%v", raw, err, ok)
		}
		if err != nil && !strings.Contains(err.Error(), "https") {
			t.Errorf("CheckURL(%s) error does not state the rule: %v", raw, err)
		}
	}
}

// A plain-http manifest on a non-loopback host is refused before any
// request: the error names the URL and the rule.
func TestRunRefusesPlainHTTPManifest(t *testing.T) {
	e := newUpdateEnv(t)
	e.opts.ManifestURL = "http://releases.example.org/manifest.json"
	_, err := Run(context.Background(), e.opts, e.deps)
	if !errors.Is(err, ErrInsecureURL) || !strings.Contains(err.Error(), "http://releases.example.org/manifest.json") {
		t.Fatalf("err = %v, want ErrInsecureURL naming the URL", err)
	}
	e.assertUntouched(t)
}

// A manifest (served over loopback) pointing a release at plain http
// elsewhere is refused before its artefacts are fetched.
func TestRunRefusesPlainHTTPArtefact(t *testing.T) {
	e := newUpdateEnv(t)
	m := string(e.rs.get("/manifest.json"))
	m = strings.Replace(m, `"sha256sums":"v0.2.0/SHA256SUMS"`, `"sha256sums":"http://198.51.100.7/v0.2.0/SHA256SUMS"`, 1)
	e.rs.set("/manifest.json", []byte(m))
	_, err := Run(context.Background(), e.opts, e.deps)
	if !errors.Is(err, ErrInsecureURL) || !strings.Contains(err.Error(), "http://198.51.100.7/v0.2.0/SHA256SUMS") {
		t.Fatalf("err = %v, want ErrInsecureURL naming the artefact URL", err)
	}
	e.assertUntouched(t)
}

// A redirect to plain http off loopback is refused before it is followed
// (CheckRedirect runs before any connection to the new location).
func TestSecureClientRefusesDowngradeRedirect(t *testing.T) {
	var followed atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ok" {
			followed.Add(1)
			return
		}
		if r.URL.Path == "/local" {
			http.Redirect(w, r, "/ok", http.StatusFound)
			return
		}
		http.Redirect(w, r, "http://203.0.113.9/manifest.json", http.StatusFound)
	}))
	defer srv.Close()
	c := SecureClient(&http.Client{Timeout: 5 * time.Second})
	_, err := c.Get(srv.URL + "/away")
	if err == nil || !errors.Is(err, ErrInsecureURL) {
		t.Fatalf("redirect to plain http followed: %v", err)
	}
	resp, err := c.Get(srv.URL + "/local")
	if err != nil {
		t.Fatalf("loopback redirect refused: %v", err)
	}
	resp.Body.Close()
	if followed.Load() != 1 {
		t.Fatal("loopback redirect not followed")
	}
}

func TestReleasedAt(t *testing.T) {
	sum := strings.Repeat("a", 64) + "  banger_v1.0.0_linux_amd64.tar.gz\n"
	at, ok, err := ReleasedAt([]byte(SumsHeader(fixtureReleasedAt) + sum))
	if err != nil || !ok || !at.Equal(fixtureReleasedAt) {
		t.Fatalf("ReleasedAt = %v %v %v", at, ok, err)
	}
	if _, ok, err := ReleasedAt([]byte(sum)); ok || err != nil {
		t.Fatalf("undated SHA256SUMS: ok=%v err=%v", ok, err)
	}
	for _, bad := range []string{
		"# released: yesterday\n" + sum,
		SumsHeader(fixtureReleasedAt) + SumsHeader(fixtureReleasedAt) + sum,
	} {
		if _, _, err := ReleasedAt([]byte(bad)); err == nil {
			t.Errorf("ReleasedAt accepted %q", bad)
		}
	}
	// The comment does not disturb the hashes.
	table, err := ParseSHA256SUMS([]byte(SumsHeader(fixtureReleasedAt) + sum))
	if err != nil || len(table) != 1 {
		t.Fatalf("ParseSHA256SUMS with a date line: %v %v", table, err)
	}
}

// --check verifies the newest release's signature before it reports its
// date: a forged date (SHA256SUMS altered) is an error, not a date.
func TestRunCheckRefusesForgedReleaseDate(t *testing.T) {
	e := newUpdateEnv(t)
	e.opts.Check = true
	sums := string(e.rs.get("/v0.2.0/SHA256SUMS"))
	e.rs.set("/v0.2.0/SHA256SUMS", []byte(strings.Replace(sums, "2026-04-30", "2036-04-30", 1)))
	res, err := Run(context.Background(), e.opts, e.deps)
	if !errors.Is(err, ErrBadSignature) {
		t.Fatalf("err = %v, want ErrBadSignature", err)
	}
	if res.LatestSigned.Dated {
		t.Fatalf("a forged date was reported: %+v", res.LatestSigned)
	}
	e.assertUntouched(t)
}
