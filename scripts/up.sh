#!/usr/bin/env bash
# Installs and builds everything (scripts/setup.sh), then runs `netrig up` with the given
# flags: the whole pipeline on this host until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec node dist/cli/main.js up "$@"
