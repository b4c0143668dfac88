package vmm

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateShared(t *testing.T) {
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initrd")
	if err := os.WriteFile(initrd, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := Spec{Dir: dir, Initrd: initrd, Net: &Net{Tap: "bt-a1", MAC: "02:00:00:00:00:01"}}
	if err := ValidateShared(good); err != nil {
		t.Fatalf("good spec: %v", err)
	}
	for what, c := range map[string]struct {
		mod  func(*Spec)
		want string
	}{
		"no dir":      {func(s *Spec) { s.Dir = filepath.Join(dir, "gone") }, "is not a directory"},
		"dir a file":  {func(s *Spec) { s.Dir = initrd }, "is not a directory"},
		"initrd gone": {func(s *Spec) { s.Initrd = filepath.Join(dir, "nope") }, "initrd"},
		"initrd dir":  {func(s *Spec) { s.Initrd = dir }, "not a regular file"},
		"tap shell":   {func(s *Spec) { s.Net = &Net{Tap: "eth0;reboot", MAC: "02:00:00:00:00:01"} }, "not a valid interface name"},
		"tap long":    {func(s *Spec) { s.Net = &Net{Tap: "bt-0123456789abc", MAC: "02:00:00:00:00:01"} }, "not a valid interface name"},
		"mac short":   {func(s *Spec) { s.Net = &Net{Tap: "bt-a", MAC: "02:00:00:00:01"} }, "want xx:xx"},
		"mac eui64":   {func(s *Spec) { s.Net = &Net{Tap: "bt-a", MAC: "02:00:00:00:00:00:00:01"} }, "want xx:xx"},
	} {
		s := good
		c.mod(&s)
		err := ValidateShared(s)
		if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrInvalidSpec with %q", what, err, c.want)
		}
	}
}
