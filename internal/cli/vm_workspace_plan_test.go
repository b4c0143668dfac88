package cli

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/bangerdev/banger/internal/imagecat"
	"github.com/bangerdev/banger/internal/toolingplan"
)

// The plan image's name carries the plan's hash: what banger plan --json
// prints as "hash" is what image.plan keys the image by.
func TestPlanPackagesKeyThePlanImage(t *testing.T) {
	fixtures := filepath.Join("..", "toolingplan", "testdata")
	f, err := os.Open(filepath.Join(fixtures, "Packages"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lookup, err := toolingplan.StaticIndex(f, "bookworm")
	if err != nil {
		t.Fatal(err)
	}
	reqs := []toolingplan.Request{{Tool: "go", Version: ">=1.19"}, {Tool: "jq"}, {Tool: "make"}, {Tool: "go"}, {Tool: "node", Version: "99"}}
	plan, err := toolingplan.Make(context.Background(), reqs, lookup)
	if err != nil {
		t.Fatal(err)
	}
	pkgs := planPackages(plan)
	if len(pkgs) == 0 || len(pkgs) != len(plan.Packages) {
		t.Fatalf("plan packages %v, plan lists %v", pkgs, plan.Packages)
	}
	ip := make([]imagecat.PlanPackage, len(pkgs))
	for i, p := range pkgs {
		ip[i] = imagecat.PlanPackage(p)
	}
	sorted, err := imagecat.ValidatePlan(ip)
	if err != nil {
		t.Fatal(err)
	}
	if got := imagecat.PlanHash(sorted); got != plan.Hash {
		t.Fatalf("image.plan keys by %s, the plan's hash is %s", got, plan.Hash)
	}
}
