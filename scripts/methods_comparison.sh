#!/usr/bin/env bash
# The methods side by side in the toy world, on the held-out identities and seeds of the
# SingleInsert ablation (scripts/toyworld_ablation.sh, which this shares its folders with):
# SingleInsert as shipped (stage I then II, preset world), textual inversion (preset
# world-textual-inversion), DreamBooth-LoRA on top of it (TI + DB, world-dreambooth-lora) and Cross
# Initialization started from the world's named persons (world-cross-init), each scored by
# `eval concept` against the identity's floors and ceilings, with its wall time. Resumable: each
# step leaves a file and is skipped when it exists.
#   scripts/methods_comparison.sh [OUT] [IDENTITIES] [SEEDS]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out/methods}"
identities="${2:-10}"
seeds="${3:-3}"
source scripts/toyworld_common.sh
names="$out/names.txt"
[ -f "$names" ] || "$bin" world --list-names > "$names"

for ((k = 0; k < identities; ++k)); do
  prepare "$k"
  timed "$dir/s1-fg-bg" "${invert[@]}" --mask "$dir/subject/sample_0000_mask.png" --out "$dir/s1-fg-bg"
  timed "$dir/s2-sm" "${finetune[@]}" --concept "$dir/s1-fg-bg" --out "$dir/s2-sm"
  score "$dir/s2-sm"
  timed "$dir/ti" "$bin" invert --model "$model" --method textual-inversion --preset world-textual-inversion \
    --class face --image "$image" --mask "$dir/subject/sample_0000_mask.png" --out "$dir/ti"
  score "$dir/ti"
  timed "$dir/ti-db" "$bin" finetune --model "$model" --method dreambooth-lora --preset world-dreambooth-lora \
    --concept "$dir/ti" --out "$dir/ti-db"
  score "$dir/ti-db"
  timed "$dir/ci" "$bin" invert --model "$model" --method cross-init --preset world-cross-init --init-names "$names" \
    --class face --image "$image" --mask "$dir/subject/sample_0000_mask.png" --out "$dir/ci"
  score "$dir/ci"
  echo "identity $id: every method scored" >&2
done

python3 scripts/toyworld_tables.py "$out" > "$out/tables.md"
cat "$out/tables.md"
