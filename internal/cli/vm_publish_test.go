package cli

import (
	"errors"
	"testing"

	"github.com/bangerdev/banger/internal/model"
)

func TestParsePublish(t *testing.T) {
	for in, want := range map[string]model.PortMap{"8080:80": {Host: 8080, Guest: 80}, "3000": {Host: 3000, Guest: 3000}} {
		if got, err := parsePublish(in); err != nil || got != want {
			t.Errorf("parsePublish(%q) = %+v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "0", "70000", "a:80", "127.0.0.1:80:80", "80:", ":80", "-1"} {
		if _, err := parsePublish(bad); err == nil {
			t.Errorf("parsePublish(%q) accepted", bad)
		}
	}
	var ue *UsageError
	if _, err := (publishFlags{ports: []string{"80", "8080:80"}}).parse(); !errors.As(err, &ue) {
		t.Errorf("a guest port published twice: %v, want a usage error", err)
	}
}
