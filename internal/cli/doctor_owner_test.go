package cli

import (
	"testing"

	"github.com/bangerdev/banger/internal/store"
)

func TestParseCheckOutput(t *testing.T) {
	ok := parseCheckOutput("store: /x/banger.db\ncurrent schema: 2\ntarget schema: 3\nmigrate: ok\n")
	if ok != (store.CheckResult{Current: 2, Target: 3, WouldSucceed: true}) {
		t.Fatalf("ok output parsed as %+v", ok)
	}
	bad := parseCheckOutput("store: /x/banger.db\ncurrent schema: 0\ntarget schema: 3\nmigrate: would fail: stat store: permission denied\n")
	if bad.WouldSucceed || bad.Reason != "stat store: permission denied" || bad.Target != 3 {
		t.Fatalf("failing output parsed as %+v", bad)
	}
}
