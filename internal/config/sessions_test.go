package config

import (
	"errors"
	"strings"
	"testing"
)

func TestSessionsReplayBytes(t *testing.T) {
	if d := Default().Sessions.ReplayBytes; d != 1<<20 {
		t.Fatalf("default replay_bytes %d", d)
	}
	cfg, err := Load(write(t, "[sessions]\nreplay_bytes = 65536\n"))
	if err != nil || cfg.Sessions.ReplayBytes != 65536 {
		t.Fatalf("replay_bytes: %+v %v", cfg.Sessions, err)
	}
	for _, bad := range []string{"0", "-1", "16777217"} {
		_, err := Load(write(t, "[sessions]\nreplay_bytes = "+bad+"\n"))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "sessions.replay_bytes") {
			t.Fatalf("replay_bytes = %s: %v", bad, err)
		}
	}
}
