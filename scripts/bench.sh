#!/usr/bin/env bash
# Runs banger's benchmarks and prints their tables. Figures go into
# docs/benchmarks.md with the command that produced them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin
scripts/deps.sh
scripts/build.sh
source scripts/fixtures.sh
echo "== foundation: API latency, daemon status vs version"
go test -count=1 -run '^$' -bench 'NoopCall' -benchtime 5000x ./e2e/
go test -count=1 -run '^$' -bench 'StatusVsVersion' -benchtime 40x ./e2e/
