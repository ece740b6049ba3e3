#!/usr/bin/env bash
# The main job on the embedded default model: builds singleinsert, creates the small built-in
# model on first run, and renders a few prompts. Pass --model DIR to use real SD v1.5 weights.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh build Release
bin=build/tools/singleinsert

model=""
if [ "${1:-}" = "--model" ]; then model="$2"; fi
if [ -z "$model" ]; then
  model=models/default
  if [ ! -d "$model" ]; then "$bin" create-default-model --out "$model" >/dev/null; fi
  cat >&2 <<'NOTE'
Using the embedded default model (models/default): a small Stable-Diffusion-shaped model with
random, untrained weights. It runs every step of the real pipeline but draws noise, not pictures.
For real images, point --model at a Stable Diffusion v1.5 folder in diffusers layout, e.g.
  scripts/demo.sh --model /path/to/stable-diffusion-v1-5
NOTE
  size=64
else
  size=512
fi

out="out/demo-$(date +%Y%m%d-%H%M%S)"
"$bin" generate --model "$model" \
  --prompt "a photo of a face wearing sunglasses on the beach" \
  --prompt "an oil painting of a cat in a garden" \
  --negative-prompt "blurry" --images-per-prompt 2 --steps 20 --sampler dpmpp_2m \
  --seed 42 --width "$size" --height "$size" --out "$out" >/dev/null
echo "demo images: $out/0000.png ... $out/0003.png (parameters in $out/run.json and in each PNG)"
