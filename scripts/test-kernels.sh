#!/usr/bin/env bash
# The kernel matrix: boots Debian's own kernels under qemu (scripts/kernel-vm.sh) and, in
# each, runs the capture check (test/kernel/guest-check.ts: the edge loads and attaches as
# it would there, then HTTP/1, DNS over UDP, a refused connection and a retransmit between
# two network namespaces, checked in the decoded records). One line per kernel:
# `kernel <release>: ok <what was captured>` or `kernel <release>: FAIL <why>`; exits
# non-zero on any FAIL. The host's own kernel is covered by the end-to-end tests.
# Expects the build (scripts/setup.sh); SUITES overrides the list (e.g. SUITES=bullseye).
set -euo pipefail
cd "$(dirname "$0")/.."
suites=(${SUITES:-bullseye bookworm trixie})
# Per kernel: boot, node start and the check take 30-60 s under TCG alone, but 4-5 min for
# the 6.12 guest after a full test run on this 2-core host (one run hit 300 s); this bounds a hang.
TIMEOUT_S=300
check=dist/test/kernel/guest-check.js
[[ -f $check ]] || { echo "test-kernels: $check is missing: run scripts/setup.sh first" >&2; exit 1; }
work=$(mktemp -d /tmp/netrig-kernels.XXXXXX)
trap 'rm -rf "$work"' EXIT
failed=0
for suite in "${suites[@]}"; do
  out=$work/$suite
  code=0
  # --share: the guest's /tmp is its own, and this clone may live under the host's.
  scripts/kernel-vm.sh run "$suite" "$out" "$TIMEOUT_S" --share "$PWD" -- /usr/bin/env NETRIG_LOG_LEVEL=error "$(command -v node)" "$PWD/$check" \
    >"$work/$suite.console" 2>&1 || code=$?
  line=$(grep -h '^kernel ' "$out/output.log" 2>/dev/null | tail -1 || true)
  if [[ -z $line ]]; then
    line="kernel $suite: FAIL the guest printed no result (exit $code): $(tail -5 "$work/$suite.console" | tr '\n' ' ')"
  elif [[ $code -ne 0 && $line == *": ok "* ]]; then
    line="kernel $suite: FAIL the check said ok but exited $code"
  fi
  echo "$line"
  [[ $line == *": ok "* ]] || failed=1
done
exit "$failed"
