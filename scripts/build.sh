#!/usr/bin/env bash
# Configures and builds singleinsert with Ninja. Usage: scripts/build.sh [build-dir] [build-type]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${1:-build}"
build_type="${2:-Release}"
jobs="${SINGLEINSERT_JOBS:-$(nproc)}"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type" ${SINGLEINSERT_CMAKE_ARGS:-} >/dev/null
ninja -C "$build_dir" -j "$jobs"
