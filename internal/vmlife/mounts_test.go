package vmlife

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/vmm"
)

type capsDriver struct {
	vmm.Driver
	name model.VMMKind
	caps vmm.Capabilities
}

func (d capsDriver) Name() model.VMMKind            { return d.name }
func (d capsDriver) Capabilities() vmm.Capabilities { return d.caps }

func TestMigratable(t *testing.T) {
	if err := Migratable(model.VM{Name: "a"}); err != nil {
		t.Errorf("vm without mounts: %v", err)
	}
	err := Migratable(model.VM{Name: "a", Mounts: []model.Mount{{Source: "/x", Target: "/x", Tag: "banger0"}}})
	if !errors.Is(err, ErrNotMigratable) || !strings.Contains(err.Error(), "shares host directories") {
		t.Errorf("vm with mounts: %v", err)
	}
}

func TestCheckMounts(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	qemu := capsDriver{name: "qemu", caps: vmm.Capabilities{SharedDirs: true}}
	fc := capsDriver{name: "firecracker"}

	r := &CreateRequest{Mounts: []model.Mount{{Source: a}, {Source: b, Target: "/data", ReadOnly: true}}, Workdir: a}
	got, err := checkMounts(r, qemu)
	want := []model.Mount{{Source: a, Target: a, Tag: "banger0"}, {Source: b, Target: "/data", ReadOnly: true, Tag: "banger1"}}
	if err != nil || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("checkMounts = %+v, %v; want %+v", got, err, want)
	}
	if _, err := checkMounts(&CreateRequest{Mounts: []model.Mount{{Source: a}}}, fc); err == nil || !strings.Contains(err.Error(), "banger vm sync") {
		t.Errorf("firecracker: %v, want a refusal naming banger vm sync", err)
	}
	for name, r := range map[string]*CreateRequest{
		"relative":         {Mounts: []model.Mount{{Source: "rel"}}},
		"missing":          {Mounts: []model.Mount{{Source: filepath.Join(dir, "nope")}}},
		"same target":      {Mounts: []model.Mount{{Source: a, Target: "/x"}, {Source: b, Target: "/x"}}},
		"guest /proc":      {Mounts: []model.Mount{{Source: a, Target: "/proc"}}},
		"guest root":       {Mounts: []model.Mount{{Source: a, Target: "/"}}},
		"workdir no mount": {Workdir: "/x"},
		"workdir relative": {Mounts: []model.Mount{{Source: a}}, Workdir: "x"},
		"too many":         {Mounts: make([]model.Mount, model.MaxMounts+1)},
	} {
		if _, err := checkMounts(r, qemu); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
