# Sourced by the toy-world experiments (scripts/toyworld_ablation.sh, scripts/methods_comparison.sh)
# after they set $out and $seeds: the binary, the committed model and detector, and the steps every
# experiment shares. Every step leaves a file and is skipped when its file exists, so a run killed
# halfway continues where it stopped.
# shellcheck shell=bash
bin=build/tools/singleinsert
model=assets/world/model
detector=assets/world/world_detector.safetensors
mkdir -p "$out"
[ -d "$model/tokenizer" ] || "$bin" world --write-tokenizer "$model/tokenizer" >/dev/null  # generated, not stored

# timed DIR COMMAND...: runs a training command unless its concept folder DIR exists (continuing
# an interrupted one with --resume), and records its wall time in DIR.seconds.
timed() {
  local target=$1
  shift
  [ -d "$target" ] && return 0
  local start resume=()
  [ -d "$target.partial" ] && resume=(--resume)
  start=$(date +%s%N)
  "$@" "${resume[@]}" >/dev/null
  awk -v a="$start" -v b="$(date +%s%N)" -v before="$(cat "$target.seconds" 2>/dev/null || echo 0)" \
    'BEGIN { printf "%.1f\n", before + (b - a) / 1e9 }' > "$target.seconds"
}
# score CONCEPT: eval concept into CONCEPT.eval.json (the identity's floors are measured once).
score() {
  [ -f "$1.eval.json" ] && return 0
  "$bin" eval concept --model "$model" --concept "$1" --detector "$detector" --source "$dir/subject/samples.jsonl" \
    --seeds "$seeds" --steps 25 --floors "$dir/floors.json" --json "$1.eval.json" >/dev/null
}

# One identity's folder, its renders (the source, an all-foreground mask, a cup) and commands.
prepare() {
  id=$((100 + $1))
  dir="$out/identity-$id"
  mkdir -p "$dir"
  [ -d "$dir/subject" ] || "$bin" world --out "$dir/subject" --identity "$id" --held-out --source --size 64 >/dev/null
  [ -d "$dir/full" ] || "$bin" world --out "$dir/full" --identity "$id" --held-out --source --size 64 --full-mask >/dev/null
  [ -d "$dir/cup" ] || "$bin" world --out "$dir/cup" --subject cup --identity "$id" --held-out --source --size 64 >/dev/null
  image="$dir/subject/sample_0000.png"
  invert=("$bin" invert --model "$model" --preset world --class face --image "$image")
  finetune=("$bin" finetune --model "$model" --preset world)
}
