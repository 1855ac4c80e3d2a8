#!/usr/bin/env bash
# The test command: installs and builds everything (scripts/setup.sh), then runs every
# tier — unit, integration (real nats-server, embedded ClickHouse), end-to-end (real eBPF,
# network namespaces, real clients and servers) — in one node:test run, then the kernel
# matrix (scripts/test-kernels.sh: Debian's 5.10, 6.1 and 6.12 under qemu). Fails on any
# failed, skipped or todo test and on any kernel that fails. Given test paths, runs only those.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
targets=("$@")
matrix=0
((${#targets[@]})) || { targets=(dist/test/unit dist/test/integration dist/test/e2e); matrix=1; }
status=0
node --test --test-reporter=tap --test-concurrency=1 --test-timeout=600000 "${targets[@]}" 2>&1 | tee "$log" || status=$?
for what in skipped todo; do
  n=$(grep -E "^# $what [0-9]+" "$log" | tail -1 | awk '{print $3}')
  if [[ "${n:-0}" != 0 ]]; then
    echo "netrig tests: $n $what test(s): every test must run" >&2
    status=1
  fi
done
if ((matrix)); then
  scripts/test-kernels.sh || status=1
fi
exit "$status"
