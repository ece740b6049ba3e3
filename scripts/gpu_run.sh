#!/usr/bin/env bash
# One call on a CUDA machine with PyTorch 2.x and no apt (carry .deps/gpu, made here by
# scripts/gpu_fetch_deps.sh): guards, then six stages, each under its own timeout inside one
# overall budget, all output in one log:
#   1 guards        versions, the carried files, the prefix unpacked
#   2 build-bench   configure (no OpenCV) and build singleinsert-bench
#   4 bench-short   fp16 and bf16 at 512 px: 50-step sample, unet_forward, stage2_step, train
#   8 build-tests   build singleinsert_tests
#  16 parity        the CUDA parity tests only, float32 with TF32 off
#  32 bench-rest    the other scenarios (fp32 with TF32, bf16)
# The exit status is the sum of the failed stages' numbers (0: all passed). Results go to
# $OUT (default out/gpu-run): gpu_run.log and figures.json, nothing else.
#
#   scripts/gpu_run.sh [--device cuda|cpu] [--budget SECONDS] [--scale K] [--build-dir DIR]
# --device cpu runs the same stages against Debian's LibTorch on a tiny configuration: the dry
# run that proves everything but the GPU itself (scripts/gpu_dry_run.sh). --scale multiplies
# every stage's timeout (a 2-core machine builds about eight times slower than 16 cores).
set -uo pipefail
cd "$(dirname "$0")/.."
device=cuda
budget=470  # seconds; the whole call must end within 8 minutes
build_dir=build-gpu
scale=1
stage=""  # internal: run one stage's function (the script calls itself under timeout)
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --budget) budget="$2"; shift 2 ;;
    --build-dir) build_dir="$2"; shift 2 ;;
    --scale) scale="$2"; shift 2 ;;
    --stage) stage="$2"; shift 2 ;;
    *) echo "usage: scripts/gpu_run.sh [--device cuda|cpu] [--budget SECONDS] [--scale K] [--build-dir DIR]" >&2
       exit 2 ;;
  esac
done
[ "$device" = cuda ] || [ "$device" = cpu ] || { echo "error: --device must be cuda or cpu" >&2; exit 2; }

repo=$PWD
carry=$repo/.deps/gpu
prefix=$carry/prefix/usr
lib=$prefix/lib/x86_64-linux-gnu
export SINGLEINSERT_GOLDEN=$carry/golden
export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export SINGLEINSERT_TF32=0  # the tests; the bench sets TF32 itself
export TORCH_CUDA_ARCH_LIST=9.0  # H100/H200: torch's CMake need not probe the GPU
if [ "$device" = cuda ] && command -v nvcc >/dev/null; then
  CUDACXX=$(command -v nvcc)
  CUDAToolkit_ROOT=$(dirname "$(dirname "$CUDACXX")")
  export CUDACXX CUDAToolkit_ROOT
fi
jobs=$(nproc)
bench="$build_dir/tools/singleinsert-bench"
tests="$build_dir/tests/singleinsert_tests"
parity_filter='ClipTextModel.*:UNet.*:Vae.*:Golden/PipelineParity.*:SeededNoise.*:PromptEncoding.*'
if [ "$device" = cuda ]; then
  size=(--resolution 512 --steps 50)
  short_dtypes=(fp16 bf16)
  rest_runs=("fp32:text_encode unet_forward vae_encode vae_decode sample stage1_step"
             "bf16:text_encode vae_encode vae_decode stage1_step")
  arch=(--arch sd15)
else
  size=(--resolution 64 --steps 3 --batch 1)
  short_dtypes=(bf16 fp32)  # fp16 needs CUDA
  rest_runs=("fp32:text_encode vae_encode vae_decode stage1_step" "bf16:text_encode vae_encode")
  arch=(--arch default)
fi

stage_guards() {
  echo "date: $(date -u +%FT%TZ)  host: $(hostname)  cores: $jobs  device: $device"
  free -g | head -2; df -h . | tail -1
  local ok=1
  for tool in g++ cmake ninja python3 tar; do
    if command -v "$tool" >/dev/null; then echo "$tool: $("$tool" --version 2>&1 | head -1)"
    else echo "MISSING: $tool"; [ "$tool" = python3 ] || ok=0; fi
  done
  if [ "$device" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || ok=0
    if command -v nvcc >/dev/null; then nvcc --version | tail -2; echo "CUDACXX=$CUDACXX"
    else echo "warning: no nvcc on PATH (torch's CMake may still find the CUDA toolkit)"; fi
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available(), "cudnn", torch.backends.cudnn.version())' || ok=0
    torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)') || ok=0
    local torch_include
    torch_include=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "include"))')
    if [ -d "$torch_include/fmt" ]; then
      echo "torch bundles fmt $(grep -m1 '#define FMT_VERSION' "$torch_include/fmt/base.h" "$torch_include/fmt/core.h" 2>/dev/null | awk '{print $NF}' | head -1) in $torch_include/fmt (spdlog's fmt 9 must come first)"
    fi
    echo "torch_prefix=$torch_prefix" > "$scratch/torch_prefix"
  else
    echo "torch: Debian's LibTorch (CPU)"
    : > "$scratch/torch_prefix"
  fi
  [ -f "$carry/prefix.tar.xz" ] || { echo "MISSING: .deps/gpu/prefix.tar.xz (run scripts/gpu_fetch_deps.sh here, carry .deps/gpu)"; ok=0; }
  [ -f "$SINGLEINSERT_GOLDEN/PARTS" ] || { echo "MISSING: .deps/gpu/golden (run scripts/gpu_fetch_deps.sh)"; ok=0; }
  if [ -f "$SINGLEINSERT_GOLDEN/PARTS" ]; then
    while read -r part; do [ -e "$SINGLEINSERT_GOLDEN/$part" ] || { echo "MISSING golden: $part"; ok=0; }; done \
      < "$SINGLEINSERT_GOLDEN/PARTS"
    echo "golden: $(wc -l < "$SINGLEINSERT_GOLDEN/PARTS") parts in $SINGLEINSERT_GOLDEN ($(du -sh "$SINGLEINSERT_GOLDEN" | cut -f1))"
  fi
  if [ "$ok" = 1 ] && [ ! -f "$carry/prefix/.unpacked" -o "$carry/prefix.tar.xz" -nt "$carry/prefix/.unpacked" ]; then
    rm -rf "$carry/prefix" && mkdir -p "$carry/prefix"
    tar -C "$carry/prefix" -xJf "$carry/prefix.tar.xz" ||
      python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$carry/prefix.tar.xz" "$carry/prefix" ||
      ok=0
    touch "$carry/prefix/.unpacked"
  fi
  for config in "$lib/cmake/spdlog/spdlogConfig.cmake" "$lib/cmake/fmt/fmt-config.cmake" "$lib/libicuuc.so" \
                "$prefix/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake" "$lib/cmake/GTest/GTestConfig.cmake"; do
    [ -e "$config" ] || { echo "MISSING in the prefix: $config"; ok=0; }
  done
  [ "$ok" = 1 ]
}

stage_build_bench() {
  local torch_prefix
  torch_prefix=$(sed -n 's/^torch_prefix=//p' "$scratch/torch_prefix")
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSINGLEINSERT_WITH_OPENCV=OFF \
    -DCMAKE_PREFIX_PATH="${torch_prefix:+$torch_prefix;}$prefix" \
    -Dspdlog_DIR="$lib/cmake/spdlog" -Dfmt_DIR="$lib/cmake/fmt" -DGTest_DIR="$lib/cmake/GTest" \
    -Dnlohmann_json_DIR="$prefix/share/cmake/nlohmann_json" \
    -DICU_INCLUDE_DIR="$prefix/include" -DICU_UC_LIBRARY_RELEASE="$lib/libicuuc.so" \
    -DICU_I18N_LIBRARY_RELEASE="$lib/libicui18n.so" -DCMAKE_EXE_LINKER_FLAGS="-Wl,-rpath-link,$lib" &&
    ninja -C "$build_dir" -k 0 -j "$jobs" singleinsert_bench
}

# bench_json NAME DTYPE SCENARIO... : one bench process, its JSON kept for figures.json.
bench_json() {
  local name=$1 dtype=$2
  shift 2
  local scenario_flags=()
  for s in "$@"; do scenario_flags+=(--scenario "$s"); done
  echo "--- bench $name: $dtype ${*}"
  "$bench" --device "$device" --dtype "$dtype" "${arch[@]}" "${size[@]}" --warmup 1 --repeats 3 --json \
    "${scenario_flags[@]}" > "$scratch/bench_$name.json" || return 1
  cat "$scratch/bench_$name.json"
}

stage_bench_short() {
  local status=0
  for dtype in "${short_dtypes[@]}"; do
    bench_json "short_$dtype" "$dtype" sample unet_forward stage2_step train || status=1
  done
  return $status
}

stage_build_tests() { ninja -C "$build_dir" -k 0 -j "$jobs" singleinsert_tests; }

stage_parity() {
  SINGLEINSERT_TEST_DEVICE=$device "$tests" --gtest_filter="$parity_filter" \
    --gtest_output="json:$scratch/tests.json"
}

stage_bench_rest() {
  local status=0 run dtype
  for run in "${rest_runs[@]}"; do
    dtype=${run%%:*}
    # shellcheck disable=SC2086
    bench_json "rest_$dtype" "$dtype" ${run#*:} || status=1
  done
  return $status
}

if [ -n "$stage" ]; then
  scratch=${SINGLEINSERT_GPU_SCRATCH:?}
  "stage_$stage"
  exit $?
fi

out="${OUT:-out/gpu-run}"
mkdir -p "$out"
log="$out/gpu_run.log"
: > "$log"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
exec > >(tee -a "$log") 2>&1
tee_pid=$!
started=$(date +%s)
deadline=$((started + budget))
failed=0
: > "$scratch/stages.tsv"
# run_stage NUMBER NAME SECONDS STAGE [NEEDS]: runs stage_STAGE under a timeout of SECONDS (less
# if the overall budget is nearer); NEEDS names an earlier stage that must have passed.
run_stage() {
  local number=$1 name=$2 seconds=$3 fn=$4 needs=${5:-}
  local now left status begin
  seconds=$((seconds * scale))
  now=$(date +%s)
  left=$((deadline - now))
  echo
  echo "=== stage $number $name (timeout ${seconds} s, ${left} s left in the budget) ==="
  if [ -n "$needs" ] && ! grep -q "^$needs	ok" "$scratch/stages.tsv"; then
    echo "skipped: needs $needs"
    printf '%s\tskipped\t0\t%s\n' "$name" "$number" >> "$scratch/stages.tsv"
    return
  fi
  [ "$seconds" -gt "$left" ] && seconds=$left
  if [ "$seconds" -lt 5 ]; then
    echo "skipped: the budget is spent"
    printf '%s\tno-time\t0\t%s\n' "$name" "$number" >> "$scratch/stages.tsv"
    failed=$((failed | number))
    return
  fi
  begin=$(date +%s.%N)
  SINGLEINSERT_GPU_SCRATCH=$scratch timeout --kill-after=10 "$seconds" \
    "$0" --device "$device" --build-dir "$build_dir" --stage "$fn"
  status=$?
  local took
  took=$(awk -v a="$begin" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  local verdict=ok
  if [ $status -eq 124 ] || [ $status -eq 137 ]; then verdict=timeout; elif [ $status -ne 0 ]; then verdict=failed; fi
  [ "$verdict" = ok ] || failed=$((failed | number))
  echo "=== stage $number $name: $verdict in ${took} s (exit $status) ==="
  printf '%s\t%s\t%s\t%s\n' "$name" "$verdict" "$took" "$number" >> "$scratch/stages.tsv"
}

run_stage 1 guards 60 guards
run_stage 2 build-bench 220 build_bench guards
run_stage 4 bench-short 80 bench_short build-bench
run_stage 8 build-tests 90 build_tests build-bench
run_stage 16 parity 45 parity build-tests
run_stage 32 bench-rest 60 bench_rest build-bench

echo
echo "=== summary ($device, $(($(date +%s) - started)) s of ${budget} s) ==="
column -t -s $'\t' "$scratch/stages.tsv" 2>/dev/null || cat "$scratch/stages.tsv"
grep -m 20 -E '(error:|\[  FAILED  \]|CMake Error|MISSING|Segmentation|Aborted)' "$log" | sed 's/^/  problem: /' || true
python3 scripts/gpu_figures.py --device "$device" --budget "$budget" --stages "$scratch/stages.tsv" \
  --scratch "$scratch" --exit-status "$failed" --out "$out/figures.json" ||
  echo "warning: figures.json was not written"
echo "exit status $failed (sum of the failed stages' numbers); log: $log, figures: $out/figures.json"
exec 1>&- 2>&-
wait "$tee_pid" 2>/dev/null
exit "$failed"
