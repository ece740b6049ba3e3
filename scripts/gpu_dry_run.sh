#!/usr/bin/env bash
# Proves here, without a GPU, what a first GPU run depends on:
#   1. scripts/gpu_fetch_deps.sh: the carried folder and the upload's size (< 60 MiB)
#   2. the fmt include order: a stand-in for PyTorch's include folder (Debian's LibTorch headers
#      plus an fmt 11 stand-in whose core.h and format.h stop the compiler) is configured as
#      torch's; the project's own compile line must take spdlog's fmt 9 from the carried prefix,
#      and the same line with torch's folder first must hit the stand-in (so the check can fail)
#   3. scripts/gpu_run.sh --device cpu: every stage on a tiny configuration, with the carried
#      prefix and golden subset (found through SINGLEINSERT_GOLDEN), the same log and JSON
# Usage: scripts/gpu_dry_run.sh [OUT]   (default out/gpu-dry-run)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out/gpu-dry-run}"
mkdir -p "$out"
echo "== 1. carried files and upload size"
scripts/gpu_fetch_deps.sh

echo "== 2. fmt include order against a stand-in of PyTorch's include folder"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fake=$work/torch
mkdir -p "$fake/include/fmt" "$work/prefix"
tar -C "$work/prefix" -xJf .deps/gpu/prefix.tar.xz
for entry in $(dpkg -L libtorch-dev | grep -E '^/usr/include/[^/]+$'); do ln -s "$entry" "$fake/include/"; done
for header in core.h format.h base.h; do
  printf '#error "the stand-in for torch/include/fmt (fmt 11) was included instead of spdlog'"'"'s fmt 9"\n' \
    > "$fake/include/fmt/$header"
done
lib=$work/prefix/usr/lib/x86_64-linux-gnu
TORCH_INSTALL_PREFIX=$fake cmake -S . -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DSINGLEINSERT_WITH_OPENCV=OFF -DSINGLEINSERT_USE_PCH=OFF -DSINGLEINSERT_BUILD_TESTS=OFF \
  -DCMAKE_PREFIX_PATH="$work/prefix/usr" -Dspdlog_DIR="$lib/cmake/spdlog" -Dfmt_DIR="$lib/cmake/fmt" \
  -Dnlohmann_json_DIR="$work/prefix/usr/share/cmake/nlohmann_json" -DICU_INCLUDE_DIR="$work/prefix/usr/include" \
  -DICU_UC_LIBRARY_RELEASE="$lib/libicuuc.so" -DICU_I18N_LIBRARY_RELEASE="$lib/libicui18n.so" >/dev/null
command=$(python3 -c '
import json, sys
for entry in json.load(open(sys.argv[1])):
    if entry["file"].endswith("src/core/logging.cpp"):
        print(entry["command"])' "$work/build/compile_commands.json")
grep -q -- "-isystem $fake/include" <<<"$command" || { echo "error: the stand-in is not on the compile line" >&2; exit 1; }
cd "$work/build"
if ! eval "$command" 2> "$work/ours.log"; then
  cat "$work/ours.log" >&2
  echo "error: the project's compile line picked the stand-in fmt" >&2
  exit 1
fi
echo "ok: src/core/logging.cpp (spdlog + fmt + torch headers) compiles with the project's include order"
# The control: torch's folder first, as it was before the fix.
swapped=$(sed "s| -isystem $work/prefix/usr/include||; s|-isystem $fake/include |-isystem $fake/include -isystem $work/prefix/usr/include |" <<<"$command")
if eval "$swapped" 2> "$work/swapped.log"; then
  echo "error: the control compiled: the stand-in is never reached, so this check proves nothing" >&2
  exit 1
fi
grep -q "stand-in for torch/include/fmt" "$work/swapped.log"
echo "ok: with torch's folder first the same line hits the stand-in (the check can fail)"
cd - >/dev/null

echo "== 3. scripts/gpu_run.sh --device cpu"
status=0
OUT="$out" scripts/gpu_run.sh --device cpu --budget 3000 --scale 8 || status=$?
python3 - "$out/figures.json" <<'EOF'
import json, sys
f = json.load(open(sys.argv[1]))
stages = [s["stage"] for s in f["stages"]]
assert stages == ["guards", "build-bench", "bench-short", "build-tests", "parity", "bench-rest"], stages
assert all(s["status"] == "ok" for s in f["stages"]), f["stages"]
assert f["tests"]["tests"] > 0 and f["tests"]["failures"] == 0, f["tests"]
for run in ("short_bf16", "short_fp32", "rest_fp32", "rest_bf16"):
    assert f["bench"][run]["scenarios"], run
print("ok: figures.json has every stage, %d parity tests passed, bench runs %s" % (f["tests"]["tests"], sorted(f["bench"])))
EOF
ls "$out"
rm -rf .deps/gpu/prefix  # unpacked by the guards stage; it must not travel (44 MiB)
exit $status
