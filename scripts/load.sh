#!/usr/bin/env bash
# The load tests at full size, on one daemon each, in network namespaces
# of their own (e2e TestLoadVMs, TestLoadAPI): VMS (default 20) VMs of
# 256 MiB created and started at once, then EXECS (200) concurrent vm exec
# on them; CLIENTS (100) concurrent API clients × CALLS (1000) mixed
# reads and writes. No failure is allowed; latencies are logged ("load:"
# lines) and the host, the daemon's and the helper's descriptors,
# goroutines and memory must come back to where they were. make test runs
# both with small sizes (4 VMs, 40 execs, 20 × 100 calls).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin

scripts/deps.sh
scripts/build.sh
source scripts/fixtures.sh
BANGER_LOAD_VMS=${VMS:-20} BANGER_LOAD_EXECS=${EXECS:-200} \
  BANGER_LOAD_CLIENTS=${CLIENTS:-100} BANGER_LOAD_CALLS=${CALLS:-1000} \
  CI=true go test -count=1 -run '^TestLoad(VMs|API)$' -timeout 2h -v ./e2e
