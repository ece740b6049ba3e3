#!/usr/bin/env bash
# Crash safety, measured: trains a concept on the tiny reference model once uninterrupted, then
# kills the same run with SIGKILL at random moments (stage I and stage II, a checkpoint after
# every step so that kills also land inside checkpoint writes), resumes each with --resume, and
# compares the result byte for byte with the uninterrupted one. Also checks that a killed run
# never leaves a concept folder behind (it is staged in OUT.partial and renamed when complete).
#
#   scripts/sigkill_trials.sh [WORK_DIR] [TRIALS] [SEED]
#
# Prints one line per trial and a summary; exits non-zero if any trial differs or left a folder.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-out/sigkill}"
trials="${2:-10}"
RANDOM="${3:-1}"
bin=build/tools/singleinsert
golden="${SINGLEINSERT_GOLDEN:-../shared/golden}"
model="$golden/sd_tiny"
image="$golden/singleinsert_losses/instance_image.png"
mask="$golden/singleinsert_losses/mask.png"
rm -rf "$work"
mkdir -p "$work"

cat > "$work/preset.json" <<'JSON'
{"resolution": 32, "checkpoint_every": 1,
 "stage1": {"steps": 60, "batch": 2, "lr": 0.001}, "stage2": {"steps": 30, "batch": 2, "lr": 0.001},
 "encoder": {"image_size": 32, "patch_size": 16, "hidden_size": 32, "intermediate_size": 64,
             "num_hidden_layers": 2, "num_attention_heads": 4}}
JSON

invert=("$bin" invert --model "$model" --image "$image" --mask "$mask" --class "teddy bear" --trigger "<bear>"
        --preset "$work/preset.json")
finetune=("$bin" finetune --model "$model" --preset "$work/preset.json")

seconds() { date +%s.%N; }
# The files that make up a concept's result (the run record holds wall times, so it is left out).
result_files() { (cd "$1" && ls *.safetensors); }

start=$(seconds)
"${invert[@]}" --out "$work/reference1" 2>/dev/null >/dev/null
stage1_seconds=$(awk -v a="$(seconds)" -v b="$start" 'BEGIN { printf "%.2f", a - b }')
start=$(seconds)
"${finetune[@]}" --concept "$work/reference1" --out "$work/reference2" 2>/dev/null >/dev/null
stage2_seconds=$(awk -v a="$(seconds)" -v b="$start" 'BEGIN { printf "%.2f", a - b }')
echo "uninterrupted: stage I ${stage1_seconds}s, stage II ${stage2_seconds}s"

failures=0
for trial in $(seq 1 "$trials"); do
  stage=$(( trial % 2 == 1 ? 1 : 2 ))
  out="$work/trial$trial"
  if [ "$stage" = 1 ]; then command=("${invert[@]}" --out "$out"); total=$stage1_seconds; reference="$work/reference1"
  else command=("${finetune[@]}" --concept "$work/reference1" --out "$out"); total=$stage2_seconds; reference="$work/reference2"; fi
  # A moment between 5% and 95% of the uninterrupted run's wall time.
  delay=$(awk -v t="$total" -v p="$(( 5 + RANDOM % 91 ))" 'BEGIN { printf "%.3f", t * p / 100 }')
  "${command[@]}" >/dev/null 2>"$work/trial$trial.log" &
  pid=$!
  sleep "$delay"
  kill -9 "$pid" 2>/dev/null || true
  status=0
  wait "$pid" 2>/dev/null || status=$?
  # Where the kill landed: the last complete checkpoint, and whether a new one was being written.
  checkpoint="none"
  for dir in checkpoint checkpoint.old; do
    state="$out.partial/$dir/state.json"
    if [ -f "$state" ]; then checkpoint="step $(grep -o '"step": *[0-9]*' "$state" | tail -1 | grep -o '[0-9]*$')"; break; fi
  done
  mid_write="no"; [ -d "$out.partial/checkpoint.next" ] && mid_write="yes"
  left=""
  if [ "$status" = 0 ]; then
    checkpoint="(finished before the kill)"
  else
    if [ -e "$out" ]; then left="left $out behind"; fi
    "${command[@]}" --resume >/dev/null 2>>"$work/trial$trial.log"
  fi
  same="identical"
  for file in $(result_files "$reference"); do
    cmp -s "$reference/$file" "$out/$file" || same="DIFFERS ($file)"
  done
  [ "$(result_files "$reference")" = "$(result_files "$out")" ] || same="DIFFERS (files)"
  if [ "$same" != "identical" ] || [ -n "$left" ]; then failures=$((failures + 1)); fi
  printf 'trial %2d: stage %s, killed at %6.2fs of %5.2fs, last checkpoint %-9s, mid-write %-3s -> %s %s\n' \
    "$trial" "$stage" "$delay" "$total" "$checkpoint" "$mid_write" "$same" "$left"
done
echo "$((trials - failures)) of $trials trials resumed to the uninterrupted result and left no half-written concept"
[ "$failures" = 0 ]
