#!/usr/bin/env bash
# Beyond Inserting beside SingleInsert in the toy world, on the held-out identities and seeds of
# scripts/methods_comparison.sh (sharing its folders, so SingleInsert's and textual inversion's
# concepts and the identities' floors are reused): Beyond Inserting with both parts (bi), the
# face-wise attention loss alone (bi-attn, --no-kv-tokens), the per-stage tokens alone (bi-kv,
# --attn-weight 0), and SingleInsert with the attention loss as an extra term in both stages
# (s1-attn, s2-attn, --attn-weight 0.003). Resumable: each step leaves a file and is skipped when
# it exists.
#   scripts/beyond_inserting_comparison.sh [OUT] [IDENTITIES] [SEEDS]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out/methods}"
identities="${2:-5}"
seeds="${3:-3}"
source scripts/toyworld_common.sh

for ((k = 0; k < identities; ++k)); do
  prepare "$k"
  mask="$dir/subject/sample_0000_mask.png"
  bi=("$bin" invert --model "$model" --method beyond-inserting --preset world-beyond-inserting --class face
      --image "$image" --mask "$mask")
  timed "$dir/bi" "${bi[@]}" --out "$dir/bi"
  score "$dir/bi"
  timed "$dir/bi-attn" "${bi[@]}" --no-kv-tokens --out "$dir/bi-attn"
  score "$dir/bi-attn"
  timed "$dir/bi-kv" "${bi[@]}" --attn-weight 0 --out "$dir/bi-kv"
  score "$dir/bi-kv"
  timed "$dir/s1-attn" "${invert[@]}" --mask "$mask" --attn-weight 0.003 --attn-reference "" --out "$dir/s1-attn"
  timed "$dir/s2-attn" "${finetune[@]}" --concept "$dir/s1-attn" --attn-weight 0.003 --attn-reference "" \
    --out "$dir/s2-attn"
  score "$dir/s2-attn"
  echo "identity $id: Beyond Inserting's variants scored" >&2
done

python3 scripts/toyworld_tables.py "$out" > "$out/tables.md"
cat "$out/tables.md"
