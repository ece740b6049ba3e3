#!/usr/bin/env bash
# One task of the array submit.sh sends: the photo of index SLURM_ARRAY_TASK_ID. Resumable.
#   task.sh BIN BATCH FLAGS...
set -euo pipefail
bin="$1"
shift
# LibTorch would use every core of the node; a task uses the CPUs Slurm gave it.
[ -z "${SLURM_CPUS_PER_TASK:-}" ] || export OMP_NUM_THREADS="$SLURM_CPUS_PER_TASK"
exec "$bin" batch "$@" --index "${SLURM_ARRAY_TASK_ID:?not inside a Slurm job array}"
