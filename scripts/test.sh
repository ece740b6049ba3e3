#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (parity against ../shared/golden,
# command-line behaviour, the bench smoke run), the Slurm array test, and the fuzz harnesses
# briefly. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/deps.sh
scripts/build.sh build Release
echo "build finished in $(( $(date +%s) - start )) s" >&2
build/tests/singleinsert_tests --gtest_brief=1
echo "all tests passed in $(( $(date +%s) - start )) s" >&2
# A 3-task Slurm job array on a one-node cluster started here (SINGLEINSERT_SLURM_TEST=0 skips it).
if [ "${SINGLEINSERT_SLURM_TEST:-1}" != 0 ]; then
  scripts/slurm/test.sh build
  echo "slurm array test passed in $(( $(date +%s) - start )) s" >&2
fi
# Each fuzz harness briefly from its seeds, when clang's libFuzzer is there (scripts/deps.sh
# installs it; SINGLEINSERT_FUZZ_SECONDS=0 skips this).
fuzz_seconds="${SINGLEINSERT_FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" -gt 0 ] && command -v clang++ >/dev/null &&
   compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null; then
  scripts/fuzz.sh "$fuzz_seconds"
  echo "fuzz harnesses passed in $(( $(date +%s) - start )) s" >&2
fi
