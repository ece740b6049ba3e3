#!/usr/bin/env bash
# The job that runs after every task of the array has ended: writes summary.md and summary.json.
#   collect.sh BIN BATCH FLAGS...
set -euo pipefail
bin="$1"
shift
exec "$bin" batch "$@" --summary-only
