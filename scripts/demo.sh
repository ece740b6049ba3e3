#!/usr/bin/env bash
# The main job on the embedded toy-world model: builds singleinsert, renders a subject (a face
# and its mask) from the procedural world, learns it as a concept (invert, then finetune),
# renders it in new prompts and measures the edits. Pass --model DIR to use real SD v1.5 weights.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh build Release >/dev/null
bin=build/tools/singleinsert

model=""
if [ "${1:-}" = "--model" ]; then model="$2"; fi
out="out/demo-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
world_model=assets/world/model
detector=assets/world/world_detector.safetensors
if [ -z "$model" ] && [ -d "$world_model" ]; then
  model="$world_model"
  # The tokenizer is generated from the world's words, not stored.
  [ -d "$model/tokenizer" ] || "$bin" world --write-tokenizer "$model/tokenizer" >/dev/null
  cat >&2 <<'NOTE'
Using the embedded toy-world model (assets/world/model): a small Stable-Diffusion-architecture
model that singleinsert trained from scratch on its procedural world of cartoon faces (64 px; see
docs/toyworld.md). It knows that world's words only. For real images, point --model at a Stable
Diffusion v1.5 folder in diffusers layout, e.g.
  scripts/demo.sh --model /path/to/stable-diffusion-v1-5
NOTE
  size=64
  stage1=(--preset world)
  stage2=(--preset world)
elif [ -z "$model" ]; then
  model=models/default
  if [ ! -d "$model" ]; then "$bin" create-default-model --out "$model" >/dev/null; fi
  cat >&2 <<'NOTE'
Using the built-in default model (models/default): random, untrained weights in the SD layout.
It runs every step of the real pipeline but draws noise. For real images, point --model at a
Stable Diffusion v1.5 folder in diffusers layout.
NOTE
  size=64
  stage1=(--resolution 64 --steps 20 --batch 4)
  stage2=(--steps 10 --batch 2)
else
  size=512
  stage1=()
  stage2=()
fi

"$bin" world --out "$out/subject" --identity 7 --held-out --source --size "$size" >/dev/null
echo "1/5 subject (a face no training scene has): $out/subject/sample_0000.png and its mask" >&2
"$bin" invert --model "$model" --image "$out/subject/sample_0000.png" --mask "$out/subject/sample_0000_mask.png" \
  --class face --out "$out/concept-stage1" "${stage1[@]}" >/dev/null
echo "2/5 stage I (invert): $out/concept-stage1" >&2
"$bin" finetune --model "$model" --concept "$out/concept-stage1" --out "$out/concept" "${stage2[@]}" >/dev/null
echo "3/5 stage II (finetune): $out/concept" >&2
"$bin" generate --model "$model" --concept "$out/concept" \
  --prompt "a photo of a * face wearing sunglasses" \
  --prompt "a photo of a * face wearing a hat" \
  --prompt "a photo of a * face on a green background" \
  --prompt "a photo of a * face next to a red cup" \
  --images-per-prompt 2 --steps 25 --seed 42 --width "$size" --height "$size" --grid --out "$out/images" >/dev/null
echo "4/5 generate: $out/images/grid.png (rows: sunglasses, hat, green background, a cup beside; 0000.png ... 0007.png)" >&2
if [ "$model" = "$world_model" ]; then
  "$bin" eval concept --model "$model" --concept "$out/concept" --detector "$detector" \
    --source "$out/subject/samples.jsonl" --seeds 2 --steps 25 --overfit-steps 0 --json "$out/eval.json" |
    grep -E '^(esr|closeness_(whole|named|hidden)|text_esr|text_closeness_(whole|hidden)|vae_ceiling_closeness_whole|novel_view_success)\b' |
    sed 's/^/   /' >&2
  echo "5/5 measured: esr = share of edits shown; closeness = how near the drawn face is to the source (1: as the" \
    "source itself, 0: as other faces), whole and in its hidden part (what words cannot say); text_ = the same" \
    "prompts with the face's attributes in words instead of the concept: $out/eval.json" >&2
  # The paper's image metrics, with the CLIP trained on the world (assets/world/world_clip), and the
  # report page.
  "$bin" eval images --concept "$out/concept" --images "$out/images" --clip assets/world/world_clip \
    --clip-tokenizer "$model/tokenizer" --masks source --edits assets/editing_prompts/world.json --json "$out/metrics.json" 2>/dev/null |
    grep -E '^(CLIP-I-f|CLIP-I-b|CLIP-T|ESR)\b' | sed 's/^/   /' >&2
  "$bin" report --concept "$out/concept" --eval "$out/metrics.json" --out "$out/report.html" 2>/dev/null
  echo "   the paper's figures with the world's CLIP (DINO and DIV need real metric models): $out/metrics.json;" \
    "everything on one page: $out/report.html" >&2
fi
echo "demo output: $out (concept in $out/concept, loss curves in $out/concept/loss.png, grid in $out/images/grid.png)"
