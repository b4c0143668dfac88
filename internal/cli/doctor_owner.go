package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/doctor"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/store"
)

// ownerStateDoctor adapts a doctor config for root inspecting the system
// install's owner state: doctor reads none of the owner's files itself, and
// the store is checked by the installed `bangerd --check-migrations
// --system`, which drops to the owner before it opens anything.
func (a *app) ownerStateDoctor(cfg doctor.Config, sys paths.System) doctor.Config {
	if os.Geteuid() != 0 {
		return cfg
	}
	cfg.OwnerState = true
	cfg.CheckStore = func(ctx context.Context, path string) (store.CheckResult, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, sys.BangerdBin(), "--check-migrations", "--system")
		cmd.Env = append(os.Environ(), paths.EnvSystemRoot+"="+sys.Root)
		out, err := cmd.CombinedOutput()
		res := parseCheckOutput(string(out))
		res.Path = path
		if err != nil && res.Reason == "" && !res.WouldSucceed {
			return res, fmt.Errorf("run %s --check-migrations --system: %w: %s", sys.BangerdBin(), err, strings.TrimSpace(string(out)))
		}
		return res, nil
	}
	return cfg
}

// parseCheckOutput reads store.CheckResult's text form.
func parseCheckOutput(out string) store.CheckResult {
	var res store.CheckResult
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		switch k {
		case "current schema":
			res.Current, _ = strconv.Atoi(v)
		case "target schema":
			res.Target, _ = strconv.Atoi(v)
		case "migrate":
			if v == "ok" {
				res.WouldSucceed = true
			} else {
				res.Reason = strings.TrimPrefix(v, "would fail: ")
			}
		}
	}
	return res
}
