#!/usr/bin/env bash
# Builds the libFuzzer harnesses of fuzz/ (clang, AddressSanitizer, UndefinedBehaviorSanitizer)
# in build-fuzz/ and runs each from its committed seed corpus, until it has made RUNS executions
# or SECONDS have passed. New corpus entries go to out/fuzz/NAME (kept between runs); a crash
# stops the run and leaves its input in out/fuzz/NAME-artifacts/.
#
#   scripts/fuzz.sh [SECONDS_EACH=30] [RUNS=10000000] [HARNESS ...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
runs="${2:-10000000}"
shift $(( $# > 2 ? 2 : $# ))
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(safetensors tokenizer configs)
root="$(pwd)"
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DSINGLEINSERT_FUZZ=ON -DSINGLEINSERT_BUILD_TESTS=OFF -DSINGLEINSERT_WITH_OPENCV=OFF \
  -DSINGLEINSERT_USE_PCH=OFF >/dev/null
ninja -C build-fuzz $(printf 'fuzz_%s ' "${harnesses[@]}") >/dev/null
for name in "${harnesses[@]}"; do
  corpus="$root/out/fuzz/$name"
  artifacts="$root/out/fuzz/$name-artifacts"
  mkdir -p "$corpus" "$artifacts"
  echo "fuzz_$name: up to $runs executions or $seconds s" >&2
  (cd "$artifacts" && "$root/build-fuzz/fuzz/fuzz_$name" -runs="$runs" -max_total_time="$seconds" -max_len=4096 \
    -print_final_stats=1 "$corpus" "$root/fuzz/corpus/$name" 2>"$artifacts/log.txt") || {
    tail -40 "$artifacts/log.txt" >&2
    exit 1
  }
  grep -E "number_of_executed_units|average_exec_per_sec" "$artifacts/log.txt" >&2
done
