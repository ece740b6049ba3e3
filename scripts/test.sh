#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (parity against ../shared/golden,
# command-line behaviour, the bench smoke run). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/deps.sh
scripts/build.sh build Release
echo "build finished in $(( $(date +%s) - start )) s" >&2
build/tests/singleinsert_tests --gtest_brief=1
echo "all tests passed in $(( $(date +%s) - start )) s" >&2
