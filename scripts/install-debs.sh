#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are missing (the machine's
# own apt sources), and prints the ones it installed, one per line. Needs root only when
# something is missing. Shared by scripts/setup.sh and scripts/kernel-vm.sh.
set -euo pipefail
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "netrig: missing Debian packages (${missing[*]}) and not root: run as root or install them" >&2
  exit 1
fi
echo "netrig: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
printf '%s\n' "${missing[@]}"
