#!/usr/bin/env bash
# Runs every native Go fuzz target, one at a time, for FUZZTIME each
# (default 60s; CI's short run uses 10s). Seed corpora live in each
# package's testdata/fuzz/FuzzX/ and also run in plain `go test`.
#
#   scripts/fuzz.sh                     # all targets, 60 s each
#   FUZZTIME=10s scripts/fuzz.sh        # the short run
#   scripts/fuzz.sh FuzzExtractTar      # only these targets
#   FUZZ_SKIP="FuzzA FuzzB" scripts/fuzz.sh   # all but these
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

FUZZTIME=${FUZZTIME:-60s}
PARALLEL=${FUZZ_PARALLEL:-2}
# Each new input is minimised before it joins the corpus; unbounded (60 s)
# that can eat a whole run on a slow target.
MINIMIZE=${FUZZMINIMIZETIME:-5s}

# package target
targets=(
	"./internal/rpc FuzzServeRequest"
	"./internal/roothelper FuzzHelperParams"
	"./internal/guest/guestagent/agentclient FuzzAgentReply"
	"./internal/guest/guestagent/agentclient FuzzHostHandshake"
	"./internal/guest/guestagent/agentproto FuzzExtractTar"
	"./internal/guest/guestagent/agentclient FuzzManifestBatch"
	"./internal/debarchive FuzzVerifyInRelease"
	"./internal/debarchive FuzzParseRelease"
	"./internal/debarchive FuzzParsePackages"
	"./internal/debarchive FuzzParseDeb822Sources"
	"./internal/debarchive FuzzParseOneLineSources"
	"./internal/updater FuzzParseManifest"
	"./internal/updater FuzzParseSHA256SUMS"
	"./internal/kernelcat FuzzDecodeLZ4"
	"./internal/kernelcat FuzzExtractVMLinux"
	"./internal/flatten FuzzApplyLayer"
)

failed=()
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	if (($#)) && [[ " $* " != *" $name "* ]]; then
		continue
	fi
	if [[ " ${FUZZ_SKIP:-} " == *" $name "* ]]; then
		echo "== fuzz $name skipped (FUZZ_SKIP)"
		continue
	fi
	echo "== fuzz $name ($pkg, $FUZZTIME)"
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$MINIMIZE" -parallel "$PARALLEL" "$pkg"; then
		failed+=("$name")
	fi
done
if ((${#failed[@]})); then
	echo "fuzz: failing targets: ${failed[*]} (crashers are in each package's testdata/fuzz/)" >&2
	exit 1
fi
