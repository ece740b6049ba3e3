#!/usr/bin/env bash
# Submits `singleinsert batch` over a prepared folder as a Slurm job array (one task per photo,
# each the same resumable step) and a collect job that writes the summary when all tasks end.
#
#   scripts/slurm/submit.sh --prepared DIR --out DIR --model M [--concurrency 8] [--gpus-per-task N]
#       [--partition P] [--time HH:MM:SS] [--cpus-per-task N] [--bin PATH] [-- BATCH FLAGS...]
#
# Prints the array's and the collect job's ids. Submitting again resubmits only what is needed:
# finished photos are skipped by the tasks themselves.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$(cd "$here/../.." && pwd)/build/tools/singleinsert"
concurrency=8
prepared="" out="" model="" gpus=0
sbatch_flags=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prepared) prepared="$(realpath "$2")"; shift 2 ;;
    --out) out="$(realpath -m "$2")"; shift 2 ;;
    --model) model="$(realpath "$2")"; shift 2 ;;
    --concurrency) concurrency="$2"; shift 2 ;;
    --gpus-per-task) gpus="$2"; sbatch_flags+=(--gres="gpu:$2"); shift 2 ;;
    --partition) sbatch_flags+=(--partition="$2"); shift 2 ;;
    --time) sbatch_flags+=(--time="$2"); shift 2 ;;
    --cpus-per-task) sbatch_flags+=(--cpus-per-task="$2"); shift 2 ;;
    --bin) bin="$(realpath "$2")"; shift 2 ;;
    --) shift; break ;;
    *) echo "error: submit.sh: unknown flag $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
[ -n "$prepared" ] && [ -n "$out" ] && [ -n "$model" ] || {
  echo "error: submit.sh: --prepared, --out and --model are required" >&2
  exit 2
}
[ -f "$prepared/prepare.json" ] || { echo "error: $prepared/prepare.json: not a prepared folder" >&2; exit 1; }
[ -x "$bin" ] || { echo "error: $bin: no singleinsert binary (build it, or pass --bin)" >&2; exit 1; }
# prepare.json is written two-space indented, a key per line.
count=$(grep -c '"status": "prepared"' "$prepared/prepare.json" || true)
[ "$count" -gt 0 ] || { echo "error: $prepared/prepare.json: no prepared photo" >&2; exit 1; }
devices=cpu
[ "$gpus" -eq 0 ] || devices=0
mkdir -p "$out/slurm"
common=(--prepared "$prepared" --out "$out" --model "$model" --devices "$devices" "$@")
array=$(sbatch --parsable --job-name=singleinsert --array="0-$((count - 1))%$concurrency" "${sbatch_flags[@]}" \
  --output="$out/slurm/task_%a.log" "$here/task.sh" "$bin" "${common[@]}")
array="${array%%;*}"
collect=$(sbatch --parsable --job-name=singleinsert-collect --dependency="afterany:$array" \
  --output="$out/slurm/collect.log" "$here/collect.sh" "$bin" "${common[@]}")
echo "array job $array ($count tasks, at most $concurrency at once); collect job ${collect%%;*}: $out/summary.md"
