#!/usr/bin/env bash
# The main job, with all set-up on a fresh machine: install what banger needs,
# build it, fetch the default kernel, build the default image, then boot a
# real VM from it, run a command in it through the guest agent, and remove it.
#
# The VM part runs in a private network namespace (unshare -n) with its own
# daemon, so the demo never changes the machine's network (bridge, NAT).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin
scripts/deps.sh
scripts/build.sh
export BANGER_HOME=${BANGER_HOME:-$HOME/.banger-demo}
bin/banger kernel inspect debian-cloud >/dev/null 2>&1 || bin/banger kernel pull debian-cloud
bin/banger image inspect debian-bookworm >/dev/null 2>&1 || bin/banger image build debian-bookworm
bin/banger daemon stop >/dev/null
exec unshare -n -- bash -c '
  set -euo pipefail
  ip link set lo up
  trap "bin/banger daemon stop >/dev/null" EXIT
  bin/banger vm run --rm -- sh -c "echo \"hello from \$(hostname): \$(uname -sr), \$(ip -4 -o addr show eth0 | awk '"'"'{print \$4}'"'"')\"; head -1 /etc/os-release"
'
