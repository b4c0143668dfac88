#!/usr/bin/env bash
# The soak: CYCLES (default 300) rounds of `banger vm run --rm -- true` on
# one daemon, in a network namespace of its own (e2e TestSoak). Every cycle
# must pass; afterwards the host must hold exactly what it held before
# (qemu processes, links, nftables rules, mounts, files under BANGER_HOME,
# descriptors and goroutines of the daemon and the helper), and the median
# of the last 30 cycles must be within 10% of the first 30. make test runs
# the same test with 30 cycles.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin

scripts/deps.sh
scripts/build.sh
source scripts/fixtures.sh
BANGER_SOAK_CYCLES=${CYCLES:-300} CI=true go test -count=1 -run '^TestSoak$' -timeout 4h -v ./e2e
