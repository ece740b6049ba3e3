#!/usr/bin/env bash
# Side-by-side timings and peak memory of singleinsert, diffusers and stable-diffusion.cpp on the
# same random-weight SD v1.5 model (see ../shared/peers/README.md for setting the peers up).
#
#   scripts/compare_peers.sh --model DIR --sd-cli PATH [--refenv DIR] [--rounds N] [--steps N]
#                            [--size PX] [--out DIR]
#
# DIR is a diffusers folder (scripts/peers/make_sd15_random.py makes one); its single-file fp16
# copy DIR_fp16.safetensors (the precision SD v1.5 files are shared in) is made with `singleinsert
# convert` when absent. Each round runs, interleaved, for fp32 and bf16: the whole process of
# singleinsert and of sd.cpp on that file (wall time and peak RSS from /usr/bin/time), sd.cpp with
# `--type f32` for fp32 and in the file's f16 for bf16, singleinsert fp32 both with --half-weights
# (the weights kept as stored, upcast layer by layer) and without; then generation only for
# singleinsert (singleinsert-bench `sample`) and diffusers (its pipeline call) on DIR's float32
# weights, each after one warm-up call. Every measurement
# goes to OUT/runs.tsv (after one untimed run that fills the page cache); the table of medians and ratios to OUT/table.md and standard output.
set -euo pipefail

model="" sd_cli="" refenv="${GOLDEN_ENV:-/work/refenv}" rounds=2 steps=10 size=256 out="out/compare-peers"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --sd-cli) sd_cli="$2"; shift 2 ;;
    --refenv) refenv="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "compare_peers.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[[ -d "$model" ]] || { echo "compare_peers.sh: --model must be a diffusers folder" >&2; exit 2; }
[[ -x "$sd_cli" ]] || { echo "compare_peers.sh: --sd-cli must be stable-diffusion.cpp's sd-cli" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "compare_peers.sh: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }

model="${model%/}"
export OMP_NUM_THREADS=2  # every program on 2 threads (sd.cpp: -t 2; diffusers: set_num_threads(2))
root="$(cd "$(dirname "$0")/.." && pwd)"
si="$root/build/tools/singleinsert" bench="$root/build/tools/singleinsert-bench"
prompt="a photo of a face wearing sunglasses"
mkdir -p "$out"
file="${model}_fp16.safetensors"
[[ -f "$file" ]] || "$si" convert --model "$model" --out "$file" --dtype fp16

# Once, untimed: every file read into the page cache, and singleinsert's one-off hash of each
# base model (the "Model hash" its images record, cached after the first run) made.
rm -rf "$out/si-images"
"$si" generate --model "$file" --tokenizer "$model/tokenizer" --prompt "$prompt" --steps 1 --width "$size" \
  --height "$size" --out "$out/si-images" > /dev/null 2>&1
rm -rf "$out/si-images"
"$si" generate --model "$model" --prompt "$prompt" --steps 1 --width "$size" --height "$size" --out "$out/si-images" \
  > /dev/null 2>&1

tsv="$out/runs.tsv"
printf 'round\tprogram\tprecision\tmeasure\tseconds\tpeak_rss_kib\n' > "$tsv"
whole() {  # whole ROUND PROGRAM PRECISION CMD...: wall time and peak RSS of a whole process
  local round="$1" program="$2" precision="$3"; shift 3
  /usr/bin/time -f '%e %M' -o "$out/time.txt" "$@" > "$out/last.log" 2>&1 ||
    { echo "compare_peers.sh: $program failed, see $out/last.log" >&2; exit 1; }
  read -r seconds kib < "$out/time.txt"
  printf '%s\t%s\t%s\twhole process\t%s\t%s\n' "$round" "$program" "$precision" "$seconds" "$kib" >> "$tsv"
}
diffusers() {  # diffusers PRECISION: seconds of one pipeline call after a warm-up
  GOLDEN_ENV="$refenv" bash -c "source '$root/../shared/refgen/env.sh'; unset LD_LIBRARY_PATH; export OMP_NUM_THREADS=2;
    \$PY '$root/scripts/peers/diffusers_generate.py' '$model' --dtype $1 --steps $steps --size $size --cfg 7 --rounds 1" |
    tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"][0])'
}

si_whole() {  # si_whole ROUND LABEL ARGS...: singleinsert generate on the fp16 file
  local round="$1" label="$2"; shift 2
  rm -rf "$out/si-images"
  whole "$round" singleinsert "$label" "$si" generate --model "$file" --tokenizer "$model/tokenizer" \
    --prompt "$prompt" --steps "$steps" --width "$size" --height "$size" --sampler euler --guidance 7 \
    --out "$out/si-images" "$@"
}

for round in $(seq 1 "$rounds"); do
  for precision in fp32 bf16; do
    echo "round $round, $precision" >&2
    if [[ $precision == fp32 ]]; then
      si_whole "$round" "fp32 --half-weights" --dtype fp32 --half-weights
      whole "$round" stable-diffusion.cpp f32 "$sd_cli" -m "$file" -p "$prompt" --steps "$steps" -W "$size" \
        -H "$size" -t 2 --sampling-method euler --cfg-scale 7 --type f32 -o "$out/sdcpp.png"
      si_whole "$round" fp32 --dtype fp32
    else
      si_whole "$round" bf16 --dtype bf16
      whole "$round" stable-diffusion.cpp f16 "$sd_cli" -m "$file" -p "$prompt" --steps "$steps" -W "$size" \
        -H "$size" -t 2 --sampling-method euler --cfg-scale 7 -o "$out/sdcpp.png"
    fi
    ms=$("$bench" --model "$model" --scenario sample --steps "$steps" --resolution "$size" \
      --sampler euler --guidance 7 --warmup 1 --repeats 1 --dtype "$precision" --json |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["scenarios"][0]["median_ms"])')
    seconds=$(python3 -c "print($ms / 1000)")
    printf '%s\tsingleinsert\t%s\tgeneration only\t%s\t\n' "$round" "$precision" "$seconds" >> "$tsv"
    seconds=$(diffusers "$precision")
    [[ -n "$seconds" ]] || { echo "compare_peers.sh: diffusers failed" >&2; exit 1; }
    printf '%s\tdiffusers\t%s\tgeneration only\t%s\t\n' "$round" "$precision" "$seconds" >> "$tsv"
  done
done
python3 "$root/scripts/peers/compare_table.py" "$tsv" | tee "$out/table.md"
