# banger — see README.md. Every target does its own set-up.
.PHONY: build test bench run release docs fmt fuzz soak faults load

build:
	scripts/build.sh

test:
	scripts/test.sh

bench:
	scripts/bench.sh

# Every fuzz target in turn, FUZZTIME each (default 60s).
fuzz:
	FUZZTIME=$${FUZZTIME:-60s} scripts/fuzz.sh

run:
	scripts/run.sh

# CYCLES (default 300) rounds of vm run --rm -- true; nothing may leak.
soak:
	CYCLES=$${CYCLES:-300} scripts/soak.sh

# 20 VMs and 200 execs at once; 100 API clients × 1000 calls (VMS, EXECS,
# CLIENTS, CALLS change the sizes).
load:
	scripts/load.sh

# every kill point of the fault tests (make test runs three per operation).
faults:
	scripts/faults.sh

# make release VERSION=v0.2.0 → dist/manifest.json, dist/v0.2.0/{tarball,SHA256SUMS,SHA256SUMS.sig};
# the tarball holds the four binaries (banger, bangerd, banger-vsock-agent, banger-helper).
# Signed with KEY (a PEM EC P-256 key) or a development key made beside dist/.
release:
	go run ./tools/mkrelease --version $${VERSION:?set VERSION=vX.Y.Z} --out dist $${KEY:+--key $$KEY}

docs:
	go run ./tools/clidoc > docs/cli.md

fmt:
	gofmt -w $$(git ls-files '*.go')
