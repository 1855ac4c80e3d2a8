#!/usr/bin/env bash
# Installs everything netrig needs on a fresh Debian 12 machine and builds it.
# Idempotent: each step checks before it acts, so a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the BPF toolchain, the real peers the tests talk to (Prometheus scrapes
# the processor's metrics, headless Chromium loads the page), nats-server, and the Docker
# engine, docker-compose and debootstrap for deploy/compose/'s test.
PKGS=(clang llvm libbpf-dev libbpf1 bpftool nats-server iproute2 nftables nginx-light curl
      nghttp2-client dnsutils unbound openssl tshark wrk zstd docker.io docker-compose debootstrap
      prometheus chromium)
installed=$(scripts/install-debs.sh "${PKGS[@]}")
if [[ -n $installed ]]; then
  # nginx, unbound and Prometheus are peers the tests start themselves, and the compose test starts a
  # Docker engine of its own (without touching the host's firewall): the packages' services stay off.
  for svc in nginx unbound prometheus prometheus-node-exporter docker docker.socket containerd; do
    systemctl disable --now "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
  done
fi

# npm dependencies exactly as the lockfile has them, which npm ci never rewrites. The
# lockfile holds every platform's optional binaries (chdb's are written in by hand: the
# registry does not serve them all, and npm leaves out what it cannot resolve, which npm ci
# then rejects as out of sync; test/unit/package-lock.test.ts checks none is missing).
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

# BPF objects, then TypeScript.
make -s -C bpf
npm run -s build
