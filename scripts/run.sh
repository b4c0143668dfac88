#!/usr/bin/env bash
# The main job, with all set-up on a fresh machine: install what banger needs,
# build it, fetch the default kernel, build the default image, then boot a
# real VM from it, run a command in it through the guest agent, and remove it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin
scripts/deps.sh
scripts/build.sh
export BANGER_HOME=${BANGER_HOME:-$HOME/.banger-demo}
bin/banger daemon start
bin/banger kernel inspect debian-cloud >/dev/null 2>&1 || bin/banger kernel pull debian-cloud
bin/banger image inspect debian-bookworm >/dev/null 2>&1 || bin/banger image build debian-bookworm
bin/banger vm run --rm -- sh -c 'echo "hello from $(hostname): $(uname -sr)"; cat /etc/os-release | head -1'
