package imagecat

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestEmbeddedCatalogDefaultImage(t *testing.T) {
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.Version != 1 {
		t.Fatalf("version = %d, want 1", c.Version)
	}
	e, err := c.DefaultEntry()
	if err != nil {
		t.Fatal(err)
	}
	if e.Name != "debian-bookworm" || e.Kind != KindDebootstrap || e.Suite != "bookworm" || e.Variant != "minbase" {
		t.Fatalf("default entry = %+v", e)
	}
	if want := []string{"openssh-server", "iproute2", "ca-certificates"}; !slices.Equal(e.Include, want) {
		t.Fatalf("include = %v, want %v", e.Include, want)
	}
	a, err := c.Lookup("alpine")
	if err != nil {
		t.Fatal(err)
	}
	if a.Kind != KindOCI || a.Ref != "docker.io/library/alpine:3.20" {
		t.Fatalf("alpine entry = %+v", a)
	}
	if _, err := c.Lookup("nope"); !errors.Is(err, ErrUnknownImage) {
		t.Fatalf("lookup of unknown image: %v, want ErrUnknownImage", err)
	}
}

// The systemd image is what --init image boots (and its e2e test uses):
// systemd must be its /sbin/init.
func TestEmbeddedCatalogSystemdImage(t *testing.T) {
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	e, err := c.Lookup("debian-bookworm-systemd")
	if err != nil {
		t.Fatal(err)
	}
	if e.Kind != KindDebootstrap || e.Suite != "bookworm" || e.Variant != "minbase" {
		t.Fatalf("systemd entry = %+v", e)
	}
	for _, pkg := range []string{"systemd-sysv", "udev", "openssh-server"} {
		if !slices.Contains(e.Include, pkg) {
			t.Errorf("systemd entry include %v lacks %s", e.Include, pkg)
		}
	}
}

func TestParseRejectsBadCatalogs(t *testing.T) {
	deb := func(extra string) string {
		return `{"version":1,"images":[{"name":"d","kind":"debootstrap","suite":"bookworm"` + extra + `}]}`
	}
	cases := map[string]struct{ json, want string }{
		"version":        {`{"version":2,"images":[]}`, "version 2"},
		"unknown field":  {`{"version":1,"images":[],"extra":1}`, "unknown field"},
		"unknown kind":   {`{"version":1,"images":[{"name":"x","kind":"iso"}]}`, "unknown kind"},
		"bad name":       {`{"version":1,"images":[{"name":"../x","kind":"oci","ref":"a"}]}`, "invalid image name"},
		"duplicate":      {`{"version":1,"images":[{"name":"x","kind":"oci","ref":"a"},{"name":"x","kind":"oci","ref":"b"}]}`, "duplicate"},
		"option package": {deb(`,"include":["--foreign"]`), "invalid package name"},
		"option suite":   {`{"version":1,"images":[{"name":"d","kind":"debootstrap","suite":"--print-debs"}]}`, "invalid suite"},
		"bad mirror":     {deb(`,"mirror":"ftp://x/debian"`), "invalid mirror"},
		"oci no ref":     {`{"version":1,"images":[{"name":"x","kind":"oci"}]}`, "invalid OCI reference"},
		"default absent": {`{"version":1,"default":"y","images":[{"name":"x","kind":"oci","ref":"a"}]}`, "default image"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(c.json))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Parse: %v, want an error containing %q", err, c.want)
			}
		})
	}
	if _, err := Parse([]byte(deb(`,"variant":"minbase","include":["openssh-server","libc6-dev","g++"],"mirror":"http://127.0.0.1:9/debian"`))); err != nil {
		t.Fatalf("valid catalog refused: %v", err)
	}
}
