#!/usr/bin/env bash
# Builds the four binaries into bin/ with version, commit and build time
# stamped into internal/buildinfo. VERSION overrides the version.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)}
case "$version" in v*) ;; *) version="v0.0.0-dev+$version" ;; esac
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
pkg=github.com/bangerdev/banger/internal/buildinfo
ldflags="-s -w -X $pkg.Version=$version -X $pkg.Commit=$commit -X $pkg.BuiltAt=$built"
out=${OUT:-bin}
mkdir -p "$out"
for b in ${BINS:-banger bangerd banger-vsock-agent banger-helper}; do
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/$b" "./cmd/$b"
done
echo "built $version ($commit) into $out/"
