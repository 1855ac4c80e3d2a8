#!/usr/bin/env bash
# Makes the files deploy/k8s/kustomization.yaml builds its Secrets from, into DIR (default:
# secrets/ beside this script): a password per NATS role, the JetStream encryption key, the
# metrics password, a CA and the NATS servers' certificate. Files that exist are kept, so a
# second run changes nothing and a password you wrote yourself stays. The ClickHouse password
# is yours: CLICKHOUSE_PASSWORD=... on the first run, or write DIR/clickhouse.password.
#
#   deploy/k8s/make-secrets.sh                       # namespace netrig, cluster.local
#   NAMESPACE=obs CLUSTER_DOMAIN=k8s.example deploy/k8s/make-secrets.sh
#
# NATS passwords and the key reach nats-server through its environment ($VARS in nats.conf),
# which it parses as configuration values: they must be letters and digits, starting with a
# letter (generated ones are). The CA's key (ca.key) is for making certificates later; no
# Secret holds it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$here/secrets}
namespace=${NAMESPACE:-netrig}
domain=${CLUSTER_DOMAIN:-cluster.local}
# Server names the certificate covers: the StatefulSet's pods up to 5 replicas.
max_replicas=5
umask 077
mkdir -p "$dir"
command -v openssl >/dev/null || { echo "make-secrets: openssl is not installed (Debian: apt-get install openssl)" >&2; exit 1; }

# A NATS-safe secret: 'n' and 48 hex digits.
secret() {
  local f=$dir/$1
  [[ -s $f ]] || printf 'n%s' "$(openssl rand -hex 24)" >"$f"
}
secret nats-edge.password
secret nats-processor.password
secret nats-admin.password
secret jetstream.key
secret metrics.password

if [[ ! -s $dir/clickhouse.password ]]; then
  if [[ -z ${CLICKHOUSE_PASSWORD:-} ]]; then
    echo "make-secrets: no ClickHouse password: run again with CLICKHOUSE_PASSWORD=... or write it to $dir/clickhouse.password" >&2
    exit 1
  fi
  printf '%s' "$CLICKHOUSE_PASSWORD" >"$dir/clickhouse.password"
fi

for f in nats-edge.password nats-processor.password nats-admin.password jetstream.key; do
  if ! grep -Eq '^[A-Za-z][A-Za-z0-9]*$' "$dir/$f"; then
    echo "make-secrets: $dir/$f must be letters and digits, starting with a letter (nats-server reads it as a configuration value)" >&2
    exit 1
  fi
done

if [[ ! -s $dir/ca.crt || ! -s $dir/ca.key ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj '/CN=netrig NATS CA' -keyout "$dir/ca.key" -out "$dir/ca.crt" \
    -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' 2>/dev/null
  rm -f "$dir/nats.crt" "$dir/nats.key"
fi

if [[ ! -s $dir/nats.crt || ! -s $dir/nats.key ]]; then
  names=(nats "nats.$namespace" "nats.$namespace.svc" "nats.$namespace.svc.$domain" localhost)
  for ((i = 0; i < max_replicas; i++)); do
    names+=("nats-$i.nats" "nats-$i.nats.$namespace" "nats-$i.nats.$namespace.svc" "nats-$i.nats.$namespace.svc.$domain")
  done
  san=$(printf 'DNS:%s,' "${names[@]}")IP:127.0.0.1
  ext=$(mktemp)
  csr=$(mktemp)
  trap 'rm -f "$ext" "$csr"' EXIT
  # Server and client use: clients check it, and the servers present it to each other on routes.
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" >"$ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=netrig NATS' \
    -keyout "$dir/nats.key" -out "$csr" 2>/dev/null
  openssl x509 -req -in "$csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -set_serial "0x$(openssl rand -hex 8)" \
    -days 825 -extfile "$ext" -out "$dir/nats.crt" 2>/dev/null
fi

echo "make-secrets: secrets in $dir (keep them out of version control)"
