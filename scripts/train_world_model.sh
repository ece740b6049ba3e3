#!/usr/bin/env bash
# Trains the toy world's base model from scratch (configs/base/world.json) into ${1:-models/world}
# and records the command, seed and wall time next to the weights.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-models/world}"
[[ -x build/tools/singleinsert ]] || scripts/build.sh build Release
start=$(date +%s)
build/tools/singleinsert train-base --config configs/base/world.json --out "$out" --save-dtype fp16 "${@:2}"
echo "trained in $(( $(date +%s) - start )) s: $out" >&2
