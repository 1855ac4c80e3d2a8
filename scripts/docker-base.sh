#!/usr/bin/env bash
# Builds the base image deploy/Dockerfile's BASE_IMAGE names, for machines that reach no
# image registry (this project's test machines): a minimal Debian 12 (bookworm, by
# debootstrap from Debian's mirror) with this host's Node.js and npm and the certificate
# authorities this host adds to Debian's (/usr/local/share/ca-certificates: an egress proxy's,
# say, without which npm cannot reach its registry from a build), imported under TAG — what
# node:20-bookworm-slim provides elsewhere. Idempotent: an existing TAG is kept.
# Talks to the Docker engine DOCKER_HOST names.
#   scripts/docker-base.sh TAG
set -euo pipefail
tag=${1:?usage: scripts/docker-base.sh TAG}
if docker image inspect "$tag" >/dev/null 2>&1; then exit 0; fi
node=$(command -v node) || { echo "docker-base: Node.js is not installed on this host" >&2; exit 1; }
npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
[[ $(node -p 'process.versions.node.split(".")[0]') -ge 20 ]] || { echo "docker-base: this host's Node.js is older than 20" >&2; exit 1; }
# One self-contained binary (nodejs.org's and NodeSource's builds), not Debian's, which links
# libnode and keeps npm's modules elsewhere.
if ldd "$(readlink -f "$node")" | grep -q libnode; then
  echo "docker-base: this host's node links libnode (Debian's nodejs): install Node.js 20 from nodejs.org or NodeSource, or build on node:20-bookworm-slim" >&2
  exit 1
fi
root=$(mktemp -d /var/tmp/netrig-docker-base.XXXXXX)
# debootstrap mounts proc and sys inside the root while it runs; a stopped run leaves them.
trap 'umount -R "$root/proc" "$root/sys" 2>/dev/null || true; rm -rf --one-file-system "$root" "$root.log"' EXIT
debootstrap --variant=minbase --include=ca-certificates,libstdc++6 bookworm "$root" http://deb.debian.org/debian >"$root.log" 2>&1 \
  || { tail -20 "$root.log" >&2; echo "docker-base: debootstrap of bookworm failed" >&2; exit 1; }
install -m 0755 "$(readlink -f "$node")" "$root/usr/bin/node"
mkdir -p "$root/usr/lib/node_modules"
cp -a "$npm_dir" "$root/usr/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/bin/npx"
# Node's headers, so a native addon without a prebuilt binary builds without a download.
nodedir=()
if [[ -d /usr/include/node ]]; then
  mkdir -p "$root/usr/include" && cp -a /usr/include/node "$root/usr/include/node"
  nodedir=(--change 'ENV npm_config_nodedir=/usr')
fi
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  "${nodedir[@]}" --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' - "$tag" >/dev/null
