#!/usr/bin/env bash
# Run on a CUDA machine with PyTorch 2.x (no apt): unpacks .deps/debs into .deps/prefix, builds
# against PyTorch's CUDA LibTorch without OpenCV, runs the tests on CUDA (float32, TF32 off) and
# the bench, writing results under ${OUT:-out/gpu}.
set -euo pipefail
cd "$(dirname "$0")/.."
results="${OUT:-out/gpu}"
mkdir -p "$results" .deps/prefix
for deb in .deps/debs/*.deb; do dpkg -x "$deb" .deps/prefix; done
prefix="$PWD/.deps/prefix/usr"
export LD_LIBRARY_PATH="$prefix/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSINGLEINSERT_WITH_OPENCV=OFF \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix" -DICU_ROOT="$prefix" 2>&1 | tail -3
ninja -C build-gpu -j "$(nproc)" 2>&1 | tail -3
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c 'import torch; print(torch.__version__)'; } \
  > "$results/machine.txt" 2>&1 || true
# Parity on CUDA in float32 with TF32 off.
SINGLEINSERT_TF32=0 SINGLEINSERT_TEST_DEVICE=cuda build-gpu/tests/singleinsert_tests --gtest_brief=1 \
  > "$results/tests.txt" 2>&1 || echo "tests failed (see $results/tests.txt)"
bench=build-gpu/tools/singleinsert-bench
for dtype in fp16 bf16 fp32; do
  "$bench" --device cuda --dtype "$dtype" --scenario unet_forward --scenario vae_decode --scenario sample \
    --repeats 10 --warmup 3 --json > "$results/bench_inference_$dtype.json" 2>&1 || true
done
"$bench" --device cuda --dtype bf16 --scenario stage1_step --scenario stage2_step --repeats 10 --warmup 3 --json \
  > "$results/bench_training_bf16.json" 2>&1 || true
"$bench" --device cuda --dtype bf16 --scenario train --warmup 0 --repeats 1 --json > "$results/bench_train_bf16.json" 2>&1 || true
echo "results in $results"
