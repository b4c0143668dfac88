#!/usr/bin/env bash
# The main job, with all set-up on a fresh machine: install what banger needs,
# build it, start the daemon and show its status.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin
scripts/deps.sh
scripts/build.sh
export BANGER_HOME=${BANGER_HOME:-$HOME/.banger-demo}
bin/banger daemon start
bin/banger daemon status
