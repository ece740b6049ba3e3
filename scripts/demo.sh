#!/usr/bin/env bash
# The main job on the embedded default model: builds singleinsert, creates the small built-in
# model on first run, draws a subject (a face and its mask), learns it as a concept (invert, then
# finetune), and renders it in new prompts. Pass --model DIR to use real SD v1.5 weights.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh build Release >/dev/null
bin=build/tools/singleinsert

model=""
if [ "${1:-}" = "--model" ]; then model="$2"; fi
out="out/demo-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
if [ -z "$model" ]; then
  model=models/default
  if [ ! -d "$model" ]; then "$bin" create-default-model --out "$model" >/dev/null; fi
  cat >&2 <<'NOTE'
Using the embedded default model (models/default): a small Stable-Diffusion-shaped model with
random, untrained weights. It runs every step of the real pipeline but draws noise, not pictures.
For real images, point --model at a Stable Diffusion v1.5 folder in diffusers layout, e.g.
  scripts/demo.sh --model /path/to/stable-diffusion-v1-5
NOTE
  # Short schedules at the small model's native 64 px, so the demo takes about a minute.
  size=64
  stage1=(--resolution 64 --steps 20 --batch 4)
  stage2=(--steps 10 --batch 2)
else
  size=512
  stage1=()
  stage2=()
fi

"$bin" world --out "$out/subject" --identity 7 --held-out --source >/dev/null
echo "1/4 subject: $out/subject/sample_0000.png and its mask" >&2
"$bin" invert --model "$model" --image "$out/subject/sample_0000.png" --mask "$out/subject/sample_0000_mask.png" \
  --class face --out "$out/concept-stage1" "${stage1[@]}" >/dev/null
echo "2/4 stage I (invert): $out/concept-stage1" >&2
"$bin" finetune --model "$model" --concept "$out/concept-stage1" --out "$out/concept" "${stage2[@]}" >/dev/null
echo "3/4 stage II (finetune): $out/concept" >&2
"$bin" generate --model "$model" --concept "$out/concept" \
  --prompt "a photo of * face wearing sunglasses on the beach" \
  --prompt "an oil painting of * face in a garden" \
  --negative-prompt "blurry" --images-per-prompt 2 --steps 20 --sampler dpmpp_2m \
  --seed 42 --width "$size" --height "$size" --out "$out/images" >/dev/null
echo "4/4 generate: $out/images/0000.png ... 0003.png" >&2
echo "demo output: $out (concept in $out/concept, loss curves in $out/concept/loss.png, images in $out/images)"
