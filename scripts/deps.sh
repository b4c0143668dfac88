#!/usr/bin/env bash
# Installs the Debian packages banger's build, tests and VMs need. Idempotent:
# packages already present are not fetched again.
set -euo pipefail
pkgs=(
  qemu-system-x86   # the VMM that runs on machines without usable KVM (TCG)
  debootstrap       # builds the default debian-bookworm image
  debian-archive-keyring  # debootstrap verifies the archive with it (--force-check-gpg)
  gpgv              # the signature check debootstrap runs
  e2fsprogs         # mkfs.ext4 -d, debugfs, resize2fs, e2fsck
  nftables          # nft, to inspect banger's NAT table in tests
  iproute2          # ip, for network namespaces in tests
  util-linux        # unshare
  openssl           # signs test releases (cosign-compatible)
  openssh-client    # ssh, ssh-keygen for guest access tests
  ca-certificates
  passwd            # useradd, for the peer-credential tests
  hyperfine         # scripts/bench: whole-process timings
  systemd           # systemd-analyze verify for the units
  systemd-container # systemd-nspawn: e2e TestSystemd boots systemd as PID 1 in a container
  nodejs            # runs the independent MCP client of the e2e tests (e2e/testdata/mcp-client)
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v npm >/dev/null || missing+=(npm) # Debian's nodejs ships npm apart; other builds bundle it
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
