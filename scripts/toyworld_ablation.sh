#!/usr/bin/env bash
# The paper's ablation (Table 2) in the toy world: for held-out identities, stage I with the
# full-image loss, with L_fg, and with L_fg + L_bg; stage II with and without L_sm after
# L_fg + L_bg, and the stage II full-image baseline. Every concept is scored with `eval concept`;
# per-run figures go to OUT/results.tsv and the mean per variant to OUT/table.md, with the scale of
# the identity distance (the source face rendered with the asked edits, and other faces).
#   scripts/toyworld_ablation.sh [OUT] [IDENTITIES] [SEEDS]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out/ablation}"
identities="${2:-10}"
seeds="${3:-3}"
bin=build/tools/singleinsert
model=assets/world/model
detector=assets/world/world_detector.safetensors
mkdir -p "$out"
[ -d "$model/tokenizer" ] || "$bin" world --write-tokenizer "$model/tokenizer"  # generated, not stored
results="$out/results.tsv"
printf 'identity\tvariant\tesr\tidentity_distance\tbackground_leakage\tseconds\tsame_face\tother_faces\n' > "$results"

# timed COMMAND...: runs a training command and prints its wall time in seconds.
timed() {
  local start
  start=$(date +%s%N)
  "$@" >/dev/null
  awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'
}
score() {  # score IDENTITY VARIANT CONCEPT SECONDS
  local figures
  figures=$("$bin" eval concept --model "$model" --concept "$3" --detector "$detector" \
    --source "$dir/subject/samples.jsonl" --seeds "$seeds" --steps 25 --json "$3.eval.json")
  printf '%s\t%s\t%s\t%s\t%s\t%.1f\t%s\t%s\n' "$1" "$2" "$(awk '$1=="esr"{print $2}' <<<"$figures")" \
    "$(awk '$1=="identity_distance"{print $2}' <<<"$figures")" \
    "$(awk '$1=="background_leakage"{print $2}' <<<"$figures")" "$4" \
    "$(awk '$1=="identity_distance_same_face"{print $2}' <<<"$figures")" \
    "$(awk '$1=="identity_distance_other_faces"{print $2}' <<<"$figures")" >> "$results"
}

for ((k = 0; k < identities; ++k)); do
  id=$((100 + k))
  dir="$out/identity-$id"
  rm -rf "$dir"
  "$bin" world --out "$dir/subject" --identity "$id" --held-out --source --size 64 >/dev/null
  "$bin" world --out "$dir/full" --identity "$id" --held-out --source --size 64 --full-mask >/dev/null
  image="$dir/subject/sample_0000.png"
  invert=("$bin" invert --model "$model" --preset world --class face --image "$image")
  finetune=("$bin" finetune --model "$model" --preset world)

  t=$(timed "${invert[@]}" --mask "$dir/full/sample_0000_mask.png" --bg-weight 0 --out "$dir/s1-full")
  score "$id" "I: full image" "$dir/s1-full" "$t"
  t1=$(timed "${invert[@]}" --mask "$dir/subject/sample_0000_mask.png" --bg-weight 0 --out "$dir/s1-fg")
  score "$id" "I: L_fg" "$dir/s1-fg" "$t1"
  t1=$(timed "${invert[@]}" --mask "$dir/subject/sample_0000_mask.png" --out "$dir/s1-fg-bg")
  score "$id" "I: L_fg + L_bg" "$dir/s1-fg-bg" "$t1"

  t=$(timed "${finetune[@]}" --concept "$dir/s1-full" --bg-weight 0 --sm-weight 0 --out "$dir/s2-full")
  score "$id" "II: full image" "$dir/s2-full" "$t"
  t=$(timed "${finetune[@]}" --concept "$dir/s1-fg-bg" --sm-weight 0 --out "$dir/s2-no-sm")
  score "$id" "II: L_fg + L_bg" "$dir/s2-no-sm" "$t"
  t=$(timed "${finetune[@]}" --concept "$dir/s1-fg-bg" --out "$dir/s2-sm")
  score "$id" "II: L_fg + L_bg + L_sm" "$dir/s2-sm" "$t"
  echo "identity $id done" >&2
done

awk -F'\t' 'NR > 1 { n[$2]++; esr[$2] += $3; d[$2] += $4; leak[$2] += $5; s[$2] += $6; same += $7; other += $8; rows++
    if (!($2 in seen)) { seen[$2] = 1; order[++m] = $2 } }
  END {
    print "| variant | ESR | identity distance | background leakage | wall time per stage |"
    print "|---|---|---|---|---|"
    for (i = 1; i <= m; ++i) { v = order[i]; printf "| %s | %.3f | %.3f | %.3f | %.0f s |\n", v, esr[v]/n[v], d[v]/n[v], leak[v]/n[v], s[v]/n[v] }
    printf "| (the source face, rendered with the edits) | | %.3f | | |\n", same/rows
    printf "| (other faces, rendered with the edits) | | %.3f | | |\n", other/rows
  }' "$results" > "$out/table.md"
cat "$out/table.md"
