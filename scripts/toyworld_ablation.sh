#!/usr/bin/env bash
# The paper's ablation (Table 2) in the toy world, with each identity's floors and ceilings, and
# the paper's two other claims: for held-out identities, stage I with the full-image loss, with
# L_fg, and with L_fg + L_bg; stage II with and without L_sm after L_fg + L_bg, and the stage II
# full-image baseline. Every concept is scored with `eval concept` (the ten editing prompts and
# the three head turns, the text floor, the class word, the VAE and overfit ceilings); each
# identity's stage II concept is then composed with a cup concept learned apart (`eval compose`).
# Every step leaves a file and is skipped when its file exists, so a run killed halfway continues
# where it stopped. The tables (OUT/tables.md) come from the JSON files by scripts/toyworld_tables.py.
#   scripts/toyworld_ablation.sh [OUT] [IDENTITIES] [SEEDS]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out/ablation}"
identities="${2:-10}"
seeds="${3:-3}"
source scripts/toyworld_common.sh

# Pass 1, SingleInsert as shipped (L_fg + L_bg, then stage II with L_sm) on every identity, so
# that the headline comparison with the floors is complete first; pass 2, the other variants;
# pass 3, the composition with a cup concept learned apart, with a trigger of its own.
for ((k = 0; k < identities; ++k)); do
  prepare "$k"
  timed "$dir/s1-fg-bg" "${invert[@]}" --mask "$dir/subject/sample_0000_mask.png" --out "$dir/s1-fg-bg"
  timed "$dir/s2-sm" "${finetune[@]}" --concept "$dir/s1-fg-bg" --out "$dir/s2-sm"
  score "$dir/s2-sm"
  echo "identity $id: SingleInsert scored" >&2
done
for ((k = 0; k < identities; ++k)); do
  prepare "$k"
  score "$dir/s1-fg-bg"
  timed "$dir/s1-full" "${invert[@]}" --mask "$dir/full/sample_0000_mask.png" --bg-weight 0 --out "$dir/s1-full"
  score "$dir/s1-full"
  timed "$dir/s1-fg" "${invert[@]}" --mask "$dir/subject/sample_0000_mask.png" --bg-weight 0 --out "$dir/s1-fg"
  score "$dir/s1-fg"
  timed "$dir/s2-full" "${finetune[@]}" --concept "$dir/s1-full" --bg-weight 0 --sm-weight 0 --out "$dir/s2-full"
  score "$dir/s2-full"
  timed "$dir/s2-no-sm" "${finetune[@]}" --concept "$dir/s1-fg-bg" --sm-weight 0 --out "$dir/s2-no-sm"
  score "$dir/s2-no-sm"
  echo "identity $id: every variant scored" >&2
done
for ((k = 0; k < identities; ++k)); do
  prepare "$k"
  timed "$dir/cup-s1" "$bin" invert --model "$model" --preset world --class cup --trigger "&" \
    --image "$dir/cup/sample_0000.png" --mask "$dir/cup/sample_0000_mask.png" --out "$dir/cup-s1"
  timed "$dir/cup-s2" "${finetune[@]}" --concept "$dir/cup-s1" --out "$dir/cup-s2"
  [ -f "$dir/compose.json" ] || "$bin" eval compose --model "$model" --detector "$detector" \
    --concept "$dir/s2-sm" --cup-concept "$dir/cup-s2" --source "$dir/subject/samples.jsonl" \
    --cup-source "$dir/cup/samples.jsonl" --seeds "$seeds" --steps 25 --json "$dir/compose.json" >/dev/null
  echo "identity $id: composed" >&2
done

python3 scripts/toyworld_tables.py "$out" > "$out/tables.md"
cat "$out/tables.md"
