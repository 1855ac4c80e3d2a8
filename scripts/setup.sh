#!/usr/bin/env bash
# Installs everything netrig needs on a fresh Debian 12 machine and builds it.
# Idempotent: each step checks before it acts, so a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the BPF toolchain, the real peers the tests talk to, nats-server, and the
# Docker engine, docker-compose and debootstrap for deploy/compose/'s test.
PKGS=(clang llvm libbpf-dev libbpf1 bpftool nats-server iproute2 nftables nginx-light curl
      nghttp2-client dnsutils unbound openssl tshark wrk zstd docker.io docker-compose debootstrap)
installed=$(scripts/install-debs.sh "${PKGS[@]}")
if [[ -n $installed ]]; then
  # nginx and unbound are peers the tests start themselves, and the compose test starts a
  # Docker engine of its own (without touching the host's firewall): the packages' services stay off.
  for svc in nginx unbound docker docker.socket containerd; do
    systemctl disable --now "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
  done
fi

# npm dependencies at the lockfile's versions. `npm install`, not `npm ci`: the lockfile has
# no entries for other platforms' optional binaries (chdb, msgpackr-extract), which npm ci
# rejects as out of sync.
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm install --no-audit --no-fund --loglevel=error
fi

# BPF objects, then TypeScript.
make -s -C bpf
npm run -s build
