#!/usr/bin/env bash
# Builds the libFuzzer harnesses of fuzz/ (clang, AddressSanitizer, UndefinedBehaviorSanitizer)
# in build-fuzz/ and runs each from its committed seed corpus, until it has made RUNS executions
# or SECONDS have passed. New corpus entries go to out/fuzz/NAME (kept between runs); a finding
# stops the run and leaves its input in out/fuzz/NAME-artifacts/.
#
#   scripts/fuzz.sh [SECONDS_EACH=30] [RUNS=10000000] [HARNESS ...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
runs="${2:-10000000}"
shift $(( $# > 2 ? 2 : $# ))
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(safetensors configs tokenizer prompts png_text adapters concept ldm)
root="$(pwd)"
mkdir -p out/fuzz
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DSINGLEINSERT_FUZZ=ON -DSINGLEINSERT_BUILD_TESTS=OFF -DSINGLEINSERT_WITH_OPENCV=OFF \
  -DSINGLEINSERT_USE_PCH=ON >out/fuzz/build.log 2>&1 &&
  ninja -C build-fuzz $(printf 'fuzz_%s ' "${harnesses[@]}") >>out/fuzz/build.log 2>&1 || {
  tail -30 out/fuzz/build.log >&2
  exit 1
}
for name in "${harnesses[@]}"; do
  corpus="$root/out/fuzz/$name"
  artifacts="$root/out/fuzz/$name-artifacts"
  mkdir -p "$corpus" "$artifacts"
  # A single-file checkpoint of the tiny model is about 35 kB as a tensor list.
  max_len=4096
  [ "$name" != ldm ] || max_len=131072
  (cd "$artifacts" && "$root/build-fuzz/fuzz/fuzz_$name" -runs="$runs" -max_total_time="$seconds" -max_len=$max_len \
    -timeout=10 -print_final_stats=1 "$corpus" "$root/fuzz/corpus/$name" 2>"$artifacts/log.txt") || {
    tail -40 "$artifacts/log.txt" >&2
    echo "fuzz_$name: a finding, its input in $artifacts" >&2
    exit 1
  }
  echo "fuzz_$name: $(grep -oE 'number_of_executed_units: [0-9]+' "$artifacts/log.txt" | grep -oE '[0-9]+') executions in" \
    "up to $seconds s, no finding" >&2
done
