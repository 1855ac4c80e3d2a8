#!/usr/bin/env bash
# Makes the password files the compose stacks mount as secrets, into DIR (default: secrets/
# beside this script; the stacks read NETRIG_SECRETS_DIR, default ./secrets), each 0600.
# Files that exist are kept, so a second run changes nothing and a password you wrote
# yourself stays. Each service mounts only the ones it uses:
#   nats-edge, nats-processor, nats-admin   the roles' passwords on the (hub's) NATS
#   nats-eu-edge, nats-us-edge              the edges' passwords on the two regions' NATS
#   nats-leaf                               regions joining the hub as leaf nodes
#   clickhouse-writer                       the processors' ClickHouse user, netrig_writer
#
#   deploy/compose/make-secrets.sh [DIR]
set -euo pipefail
dir=${1:-$(cd "$(dirname "$0")" && pwd)/secrets}
umask 077
mkdir -p "$dir"
for name in nats-edge nats-processor nats-admin nats-eu-edge nats-us-edge nats-leaf clickhouse-writer; do
  f=$dir/$name.password
  [[ -s $f ]] || od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$f"
done
