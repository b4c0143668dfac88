#!/usr/bin/env bash
# The full test suite, with all set-up on a fresh machine: Debian packages,
# the binaries, the test kernel and the default image (made by banger itself),
# then every Go test. Real-VM tests run under QEMU (TCG where KVM is unusable).
#
#   scripts/test.sh                 # everything
#   scripts/test.sh ./internal/rpc  # only these packages (fixtures still prepared)
#
# The whole suite ends with every fuzz target run for 10 s when CI=true or
# FUZZ_SHORT=1 (scripts/fuzz.sh; `make fuzz` runs them for 60 s).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin

scripts/deps.sh
scripts/build.sh
source scripts/fixtures.sh
(cd e2e/testdata/mcp-client && npm ci --ignore-scripts --no-audit --no-fund) # pinned MCP client for e2e

echo "== go vet"
go vet ./...
echo "== go test"
pkgs=("$@")
((${#pkgs[@]})) || pkgs=(./...)
go test -count=1 -timeout 45m "${pkgs[@]}"
if ((!$#)) && [[ ${CI:-} == true || ${FUZZ_SHORT:-} == 1 ]]; then
	echo "== go fuzz (short)"
	# The three slow targets (whole layers, tar trees, kernel images: tens of
	# execs a second) manage a few hundred in 10 s, and go's fuzzer
	# reports "context deadline exceeded" when its deadline lands inside one
	# slow input, failing a run that found nothing. Their seed corpora ran in
	# go test above; `make fuzz` runs them for 60 s.
	FUZZTIME=10s FUZZ_SKIP="FuzzExtractVMLinux FuzzApplyLayer FuzzExtractTar" scripts/fuzz.sh
fi
