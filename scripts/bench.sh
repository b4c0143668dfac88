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
echo "== images: pull + flatten + ext4 vs tar -x + mkfs.ext4 -d"
go test -count=1 -run '^$' -bench 'PullFlattenExt4' -benchtime 3x ./internal/imagepull/
echo "== initramfs build, cold and cached"
go test -count=1 -run '^$' -bench 'Build' ./internal/initramfs/
echo "== VMs (real QEMU, inside a private network namespace)"
unshare -n -- sh -c 'ip link set lo up && BANGER_TEST_IN_NETNS=1 exec go test -count=1 -run "^$" -bench "VMListWith20VMs|VMRunVsBareQEMU|DaemonMemoryPerVM|ExecVsSSH|ForwardThroughput|VMSuspendResume" -benchtime 3x -timeout 30m ./e2e/'
echo "== snapshots: vm run from a template vs cold; fork of 10 vs 10 cold creates, and their PSS"
unshare -n -- sh -c 'ip link set lo up && BANGER_TEST_IN_NETNS=1 exec go test -count=1 -run "^$" -bench "SnapshotRunFromTemplate" -benchtime 5x -timeout 30m ./e2e/'
unshare -n -- sh -c 'ip link set lo up && BANGER_TEST_IN_NETNS=1 exec go test -count=1 -run "^$" -bench "SnapshotFork10" -benchtime 1x -timeout 40m ./e2e/'
echo "== shared directories: tar -c on virtio-fs vs the root ext4, git status guest vs host"
unshare -n -- sh -c 'ip link set lo up && BANGER_TEST_IN_NETNS=1 exec go test -count=1 -run "^$" -bench "MountTarAndGitStatus" -benchtime 1x -timeout 40m ./e2e/'
