#!/usr/bin/env bash
# The full fault matrix: the owner daemon SIGKILLed at every named step of
# vm create, vm run, vm start, vm stop, vm rm, image pull and kernel pull,
# the helper and clients killed, a full disk and guest faults (e2e TestFault*, with
# BANGER_FAULT_ALL=1), then the host reboot simulation. make test runs the
# same tests at three points per operation.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin

scripts/deps.sh
scripts/build.sh
source scripts/fixtures.sh
BANGER_FAULT_ALL=1 CI=true go test -count=1 -run '^TestFault' -timeout 2h -v ./e2e
