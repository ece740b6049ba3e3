#!/usr/bin/env bash
# Trains the toy world's base model from scratch in three runs of train-base, and records each
# run's config, seed and wall time next to the weights (OUT/train_base.json, the earlier runs'
# inside it):
#   1. configs/base/world.json into OUT.base: the VAE, then the text encoder and UNet;
#   2. configs/base/world-noise.json into OUT.noise, continuing OUT.base (--init) with offset and
#      coarse noise, so that global colour and placement follow the caption, not the starting noise;
#   3. configs/base/world-features.json into OUT.features, continuing OUT.noise with the same
#      settings for longer (the committed model's third run taught it the world's larger mouths
#      and earrings; from scratch it is simply more of the second);
#   4. configs/base/world-details.json into OUT, continuing OUT.features with the loss weighted
#      up where mouths and earrings are drawn, so that the words for them are followed.
# Resumable: run it again after an interruption (Ctrl-C or killed) and each run continues from
# its last checkpoint (OUT.base.checkpoint.safetensors and so on) to the same
# weights an uninterrupted run gives.
#   scripts/train_world_model.sh [OUT] [other train-base flags]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-models/world}"
base="$out.base"
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
train configs/base/world.json "$base" "${@:2}"
train configs/base/world-noise.json "$out.noise" --init "$base" "${@:2}"
train configs/base/world-features.json "$out.features" --init "$out.noise" "${@:2}"
train configs/base/world-details.json "$out" --init "$out.features" "${@:2}"
echo "this part took $(( $(date +%s) - start )) s; $out/train_base.json has every run's phases and seconds" >&2
