package agentclient

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentserver"
)

func TestReidentify(t *testing.T) {
	good := agentproto.Identity{
		BootID: "0b4e2c7a-6f1d-4c3e-9a2b-1d2e3f405162", Hostname: "clone-1",
		MachineID: "0123456789abcdef0123456789abcdef", Entropy: make([]byte, 64),
		OldMAC: "02:00:00:00:00:01", MAC: "02:00:00:00:00:02",
		Address: netip.MustParsePrefix("10.213.77.5/24"), Gateway: netip.MustParseAddr("10.213.77.1"),
	}
	t.Run("unsupported", func(t *testing.T) {
		c := startUnix(t, newTestServer(agentserver.ServerOptions{}))
		if _, err := c.Reidentify(testCtx(t, 10*time.Second), good); !errors.Is(err, &agentproto.Error{Code: agentproto.CodeUnsupported}) {
			t.Fatalf("err = %v, want %s", err, agentproto.CodeUnsupported)
		}
	})
	var got []agentproto.Identity
	c := startYamux(t, newTestServer(agentserver.ServerOptions{BootID: "parent-id", Reidentify: func(_ context.Context, id agentproto.Identity) (agentproto.Reidentified, error) {
		got = append(got, id)
		return agentproto.Reidentified{SSHHostKeys: []string{"ssh-ed25519 AAAA"}}, nil
	}}))
	// Malformed identities never reach the guest's hook, and health keeps
	// answering the old id.
	bad := map[string]func(*agentproto.Identity){
		"boot id":    func(id *agentproto.Identity) { id.BootID = "../../etc" },
		"hostname":   func(id *agentproto.Identity) { id.Hostname = "a b;reboot" },
		"machine id": func(id *agentproto.Identity) { id.MachineID = "XYZ" },
		"entropy":    func(id *agentproto.Identity) { id.Entropy = []byte{1, 2, 3} },
		"mac":        func(id *agentproto.Identity) { id.MAC = "nope" },
		"address":    func(id *agentproto.Identity) { id.Address = netip.MustParsePrefix("fe80::1/64") },
	}
	for name, mutate := range bad {
		id := good
		mutate(&id)
		if _, err := c.Reidentify(testCtx(t, 10*time.Second), id); !errors.Is(err, &agentproto.Error{Code: agentproto.CodeBadRequest}) || !strings.Contains(err.Error(), "identity") {
			t.Errorf("%s: err = %v, want bad_request", name, err)
		}
	}
	if len(got) != 0 {
		t.Fatalf("bad identities reached the hook: %v", got)
	}
	if h, err := c.Health(testCtx(t, 10*time.Second)); err != nil || h.BootID != "parent-id" {
		t.Fatalf("health before reidentify = %+v, %v", h, err)
	}
	out, err := c.Reidentify(testCtx(t, 10*time.Second), good)
	if err != nil || len(out.SSHHostKeys) != 1 || len(got) != 1 || got[0].Hostname != "clone-1" {
		t.Fatalf("Reidentify = %+v, %v (hook saw %v)", out, err, got)
	}
	if h, err := c.Health(testCtx(t, 10*time.Second)); err != nil || h.BootID != good.BootID {
		t.Fatalf("health after reidentify = %+v, %v, want boot id %s", h, err, good.BootID)
	}
}

func TestFreezeBounds(t *testing.T) {
	var froze []time.Duration
	c := startUnix(t, newTestServer(agentserver.ServerOptions{
		Freeze: func(_ context.Context, d time.Duration) error { froze = append(froze, d); return nil },
		Thaw:   func(context.Context) error { return nil },
	}))
	for _, d := range []time.Duration{0, time.Hour} {
		if err := c.Freeze(testCtx(t, 10*time.Second), d); !errors.Is(err, &agentproto.Error{Code: agentproto.CodeBadRequest}) {
			t.Fatalf("Freeze(%s) = %v, want bad_request: a guest agenttest.Must never stay frozen unbounded", d, err)
		}
	}
	if err := c.Freeze(testCtx(t, 10*time.Second), time.Minute); err != nil || len(froze) != 1 || froze[0] != time.Minute {
		t.Fatalf("Freeze(1m) = %v, hook saw %v", err, froze)
	}
	if err := c.Thaw(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
}
