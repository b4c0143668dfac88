package imagecat

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidatePlanRefusesHostileNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		pkgs []PlanPackage
		want string
	}{
		{"path", []PlanPackage{{"../../etc/passwd", "1.0"}}, "not a Debian package name"},
		{"shell", []PlanPackage{{"foo;rm -rf /", "1.0"}}, "not a Debian package name"},
		{"option", []PlanPackage{{"--root=/", "1.0"}}, "not a Debian package name"},
		{"upper", []PlanPackage{{"Golang", "1.0"}}, "not a Debian package name"},
		{"one char", []PlanPackage{{"g", "1.0"}}, "not a Debian package name"},
		{"newline", []PlanPackage{{"golang-go\nopenssh-server", "1.0"}}, "not a Debian package name"},
		{"comma", []PlanPackage{{"golang-go,evil", "1.0"}}, "not a Debian package name"},
		{"version option", []PlanPackage{{"golang-go", "--force"}}, "not a Debian version"},
		{"version space", []PlanPackage{{"golang-go", "1.0 2"}}, "not a Debian version"},
		{"version colon", []PlanPackage{{"golang-go", "1.0:2"}}, "not a Debian version"},
		{"version letter first", []PlanPackage{{"golang-go", "a1.0"}}, "not a Debian version"},
		{"version dash end", []PlanPackage{{"golang-go", "1.0-"}}, "not a Debian version"},
		{"empty version", []PlanPackage{{"golang-go", ""}}, "not a Debian version"},
		{"twice", []PlanPackage{{"jq", "1.6-2.1"}, {"jq", "1.6-2.1"}}, "named twice"},
		{"none", nil, "no packages"},
		{"absurd count", manyPackages(MaxPlanPackages + 1), "at most"},
		{"huge count", manyPackages(100000), "at most"},
	} {
		_, err := ValidatePlan(tc.pkgs)
		if !errors.Is(err, ErrInvalidPlan) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want ErrInvalidPlan saying %q", tc.name, err, tc.want)
		}
	}
}

func manyPackages(n int) []PlanPackage {
	ps := make([]PlanPackage, n)
	for i := range ps {
		ps[i] = PlanPackage{Name: "pkg" + strings.Repeat("x", i%50) + string(rune('a'+i%26)), Version: "1.0"}
	}
	return ps
}

func TestPlanEntry(t *testing.T) {
	base := Entry{Name: "debian-bookworm", Kind: KindDebootstrap, Suite: "bookworm", Variant: "minbase", Include: []string{"openssh-server", "iproute2"}}
	pkgs := []PlanPackage{{"jq", "1.6-2.1"}, {"golang-go", "2:1.19~1"}, {"iproute2", "6.1.0-3"}}
	e, err := PlanEntry(base, pkgs)
	if err != nil {
		t.Fatal(err)
	}
	// Sorted, so the hash does not depend on the order asked.
	want := PlanImageName("debian-bookworm", []PlanPackage{{"golang-go", "2:1.19~1"}, {"iproute2", "6.1.0-3"}, {"jq", "1.6-2.1"}})
	if e.Name != want || !strings.HasPrefix(e.Name, "debian-bookworm-plan-") || len(e.Name) != len("debian-bookworm-plan-")+8 {
		t.Errorf("name %q, want %q", e.Name, want)
	}
	if got := strings.Join(e.Include, ","); got != "openssh-server,iproute2,golang-go,jq" {
		t.Errorf("include %s", got)
	}
	if strings.Join(base.Include, ",") != "openssh-server,iproute2" {
		t.Errorf("base entry changed: %v", base.Include)
	}
	other, _ := PlanEntry(base, []PlanPackage{{"golang-go", "2:1.19~2"}})
	if other.Name == e.Name {
		t.Error("another version made the same image name")
	}
	if _, err := PlanEntry(Entry{Name: "alpine", Kind: KindOCI, Ref: "x"}, pkgs); !errors.Is(err, ErrInvalidPlan) {
		t.Errorf("OCI base: %v", err)
	}
}

func TestCheckInstalled(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "var/lib/dpkg"), 0o755); err != nil {
		t.Fatal(err)
	}
	status := "Package: golang-go\nStatus: install ok installed\nVersion: 2:1.19~1\n\n" +
		"Package: jq\nStatus: deinstall ok config-files\nVersion: 1.6-2.1\n\n" +
		"Package: make\nStatus: install ok installed\nVersion: 4.3-4.1\n"
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CheckInstalled(root, []PlanPackage{{"golang-go", "2:1.19~1"}, {"make", "4.3-4.1"}}); err != nil {
		t.Fatalf("installed at the planned versions: %v", err)
	}
	err := CheckInstalled(root, []PlanPackage{{"golang-go", "2:1.21~2"}, {"jq", "1.6-2.1"}})
	if err == nil || !strings.Contains(err.Error(), "the plan wants 2:1.21~2, the suite installed 2:1.19~1") || !strings.Contains(err.Error(), "jq is not installed") {
		t.Fatalf("mismatch: %v", err)
	}
	// The status file is read through an os.Root: a link out of the tree is not followed.
	evil := t.TempDir()
	if err := os.MkdirAll(filepath.Join(evil, "var/lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "var/lib/dpkg"), filepath.Join(evil, "var/lib/dpkg")); err != nil {
		t.Fatal(err)
	}
	if err := CheckInstalled(evil, []PlanPackage{{"golang-go", "2:1.19~1"}}); err == nil {
		t.Fatal("followed a link out of the tree")
	}
}
