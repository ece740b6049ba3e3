#!/usr/bin/env bash
# Installs the Debian 12 packages singleinsert builds against (only the missing ones).
# See third_party/README.md for what each one is and its licence.
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config
  libtorch-dev            # LibTorch 1.13 (CPU)
  libopenblas0-openmp     # fast BLAS for LibTorch on the CPU (the OpenMP build; see docs/performance.md)
  libtcmalloc-minimal4    # allocator that keeps large tensors' pages mapped
  libicu-dev              # Unicode categories, case mapping and normalisation for the tokenizer
  nlohmann-json3-dev libspdlog-dev libfmt-dev libcli11-dev
  libopencv-dev zlib1g-dev  # image files (io layer and command line only)
  opencv-data               # the face detector `singleinsert prepare` loads at run time
  opencv-doc python3-imageio  # photographs the automatic-mask test measures against hand-drawn masks
  libgtest-dev libgmock-dev
  clang libclang-rt-14-dev  # the fuzz harnesses (libFuzzer, AddressSanitizer, UndefinedBehaviorSanitizer)
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}" >&2
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
