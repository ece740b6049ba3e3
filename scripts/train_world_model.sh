#!/usr/bin/env bash
# Trains the toy world's base model from scratch in three runs of train-base, and records each
# run's config, seed and wall time next to the weights (OUT/train_base.json, the earlier runs'
# inside it):
#   1. configs/base/world.json's VAE phase alone (--steps 0) into OUT.vae;
#   2. configs/base/world-weighted-plain.json into OUT.plain: a fresh text encoder and UNet on that
#      VAE (--init-vae), with the loss weighted up where mouths and earrings are drawn, on plain
#      noise, so that the side is learned from the caption as well as the expression;
#   3. configs/base/world-weighted-noise.json into OUT, continuing OUT.plain (--init) with offset
#      and coarse noise added, so that global colour and placement follow the caption, not the
#      starting noise.
# Resumable: run it again after an interruption (Ctrl-C or killed) and each run continues from
# its last checkpoint (OUT.plain.checkpoint.safetensors and so on) to the same weights an
# uninterrupted run gives.
#   scripts/train_world_model.sh [OUT] [other train-base flags]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-models/world}"
[[ -x build/tools/singleinsert ]] || scripts/build.sh build Release
start=$(date +%s)
# train CONFIG OUT [FLAGS...]: one run, resumed when its checkpoint is there, skipped when done.
train() {
  local config=$1 target=$2 resume=()
  shift 2
  [[ -f "$target/train_base.json" ]] && return 0
  [[ -f "$target.checkpoint.safetensors" ]] && resume=(--resume)
  build/tools/singleinsert train-base --config "$config" --out "$target" --save-dtype fp16 "${resume[@]}" "$@"
}
train configs/base/world.json "$out.vae" --steps 0 "${@:2}"
train configs/base/world-weighted-plain.json "$out.plain" --init-vae "$out.vae" "${@:2}"
train configs/base/world-weighted-noise.json "$out" --init "$out.plain" "${@:2}"
echo "this part took $(( $(date +%s) - start )) s; $out/train_base.json has every run's phases and seconds" >&2
