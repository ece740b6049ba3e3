#!/usr/bin/env bash
# Trains the toy world's base model from scratch (configs/base/world.json) into ${1:-models/world}
# and records the command, seed and wall time next to the weights. Resumable: interrupted (Ctrl-C
# or killed), run it again with --resume and it continues from the last checkpoint
# (${1}.checkpoint.safetensors) to the same weights an uninterrupted run gives.
#   scripts/train_world_model.sh [OUT] [--resume] [other train-base flags]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-models/world}"
[[ -x build/tools/singleinsert ]] || scripts/build.sh build Release
start=$(date +%s)
build/tools/singleinsert train-base --config configs/base/world.json --out "$out" --save-dtype fp16 "${@:2}"
echo "this part took $(( $(date +%s) - start )) s; $out/train_base.json has the whole run's phases and seconds" >&2
