#!/usr/bin/env bash
# Sourced by scripts/test.sh and scripts/bench.sh: prepares the test kernel,
# the default image and the systemd image (for --init image) with banger
# itself (kernel pull from the Debian archive, image builds with
# debootstrap), in a cache that survives between runs, and exports the
# BANGER_TEST_* variables the real-VM tests read.
fixture_home=${BANGER_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/banger-test}
mkdir -p "$fixture_home"
export BANGER_TEST_CACHE=$fixture_home
echo "== fixtures in $fixture_home"
fix() { BANGER_HOME="$fixture_home/home" BANGER_DAEMON_BIN="$PWD/bin/bangerd" "$PWD/bin/banger" "$@"; }
jsonfield() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
if ! kjson=$(fix kernel inspect debian-cloud --json 2>/dev/null); then
  fix kernel pull debian-cloud
  kjson=$(fix kernel inspect debian-cloud --json)
fi
export BANGER_TEST_KERNEL=$(jsonfield path <<<"$kjson")
export BANGER_TEST_MODULES=$(jsonfield modules_dir <<<"$kjson")
if ! ijson=$(fix image inspect debian-bookworm --json 2>/dev/null); then
  fix image build debian-bookworm
  ijson=$(fix image inspect debian-bookworm --json)
fi
export BANGER_TEST_IMAGE=$(jsonfield path <<<"$ijson")
if ! sjson=$(fix image inspect debian-bookworm-systemd --json 2>/dev/null); then
  fix image build debian-bookworm-systemd
  sjson=$(fix image inspect debian-bookworm-systemd --json)
fi
export BANGER_TEST_IMAGE_SYSTEMD=$(jsonfield path <<<"$sjson")
fix daemon stop >/dev/null
echo "kernel=$BANGER_TEST_KERNEL image=$BANGER_TEST_IMAGE systemd image=$BANGER_TEST_IMAGE_SYSTEMD"
