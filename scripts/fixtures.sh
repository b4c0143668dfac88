#!/usr/bin/env bash
# Sourced by scripts/test.sh: prepares the test kernel and the default image
# with banger itself, in a cache that survives between runs, and exports the
# BANGER_TEST_* variables the real-VM tests read.
fixture_home=${BANGER_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/banger-test}
mkdir -p "$fixture_home"
export BANGER_TEST_CACHE=$fixture_home
echo "== fixtures in $fixture_home"
fix() { BANGER_HOME="$fixture_home/home" BANGER_DAEMON_BIN="$PWD/bin/bangerd" "$PWD/bin/banger" "$@"; }
if fix kernel --help >/dev/null 2>&1; then
  fix kernel pull debian-cloud
  kjson=$(fix kernel inspect debian-cloud --json)
  export BANGER_TEST_KERNEL=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])' <<<"$kjson")
  export BANGER_TEST_MODULES=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["modules_dir"])' <<<"$kjson")
fi
if fix image --help >/dev/null 2>&1; then
  fix image build debian-bookworm
  ijson=$(fix image inspect debian-bookworm --json)
  export BANGER_TEST_IMAGE=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])' <<<"$ijson")
fi
fix daemon stop >/dev/null 2>&1 || true
echo "kernel=${BANGER_TEST_KERNEL:-none} image=${BANGER_TEST_IMAGE:-none}"
