#!/usr/bin/env bash
# Run here (Debian 12, with apt) before a GPU run. Prepares .deps/gpu (git-ignored), the one
# folder that travels to a CUDA machine without apt beside the working tree:
#   .deps/gpu/prefix.tar.xz  spdlog, fmt 9, nlohmann-json, GoogleTest and ICU from Debian's packages,
#                            unpacked here and trimmed (no static libraries but GoogleTest's, no docs)
#   .deps/gpu/golden/        the part of ../shared/golden the CUDA parity tests read
# Then checks the upload (tracked and untracked non-ignored files plus .deps/gpu) against the
# limit and prints the call to make there:
#   scripts/gpu_run.sh          (carry: .deps/gpu)
set -euo pipefail
cd "$(dirname "$0")/.."
limit_mib=${SINGLEINSERT_UPLOAD_LIMIT_MIB:-60}
golden_src=${SINGLEINSERT_GOLDEN:-../shared/golden}
out=.deps/gpu
packages=(libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 nlohmann-json3-dev libgtest-dev libgmock-dev
          libicu-dev libicu72)
# What the CUDA parity tests open (tests/test_{clip_text,unet,vae,pipeline}.cpp).
golden_parts=(clip_text_tiny configs_full pipeline sd_tiny unet_io.safetensors vae_io.safetensors
              schedulers/ddim_config.json schedulers/pndm_config.json schedulers/euler_config.json
              schedulers/dpmpp_2m_config.json)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debs" "$work/root"
(cd "$work/debs" && apt-get download "${packages[@]}" >/dev/null 2>&1) ||
  { echo "error: apt-get download failed for: ${packages[*]}" >&2; exit 1; }
for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/root"; done
# GoogleTest is static-only in Debian; every other static library (ICU's 42 MB) stays behind.
find "$work/root" -name '*.a' ! -name 'libgtest*.a' ! -name 'libgmock*.a' -delete
rm -rf "$work/root/usr/share/doc" "$work/root/usr/share/man" "$work/root/usr/share/lintian" \
  "$work/root/usr/bin" "$work/root/usr/sbin"
rm -rf "$out"
mkdir -p "$out/golden"
tar -C "$work/root" -cJf "$out/prefix.tar.xz" usr

[ -d "$golden_src" ] || { echo "error: no golden data at $golden_src (set SINGLEINSERT_GOLDEN)" >&2; exit 1; }
for part in "${golden_parts[@]}"; do
  [ -e "$golden_src/$part" ] || { echo "error: $golden_src/$part is missing" >&2; exit 1; }
  mkdir -p "$out/golden/$(dirname "$part")"
  cp -r "$golden_src/$part" "$out/golden/$part"
done
printf '%s\n' "${golden_parts[@]}" > "$out/golden/PARTS"

# The upload: what git would not ignore, plus the carried folder (without the prefix a dry run
# unpacked: the GPU machine unpacks its own, and it would put the upload over the limit).
rm -rf "$out/prefix"
tree_bytes=$( (git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null || true) |
  awk '{ s += $1 } END { print s + 0 }')
carry_bytes=$(du -sb "$out" | cut -f1)
prefix_bytes=$(stat -c %s "$out/prefix.tar.xz")
golden_bytes=$(du -sb "$out/golden" | cut -f1)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
total=$((tree_bytes + carry_bytes))
echo "upload: working tree $(mib "$tree_bytes") MiB + .deps/gpu $(mib "$carry_bytes") MiB" \
  "(prefix.tar.xz $(mib "$prefix_bytes"), golden $(mib "$golden_bytes")) = $(mib "$total") MiB (limit ${limit_mib} MiB)"
if [ "$total" -gt $((limit_mib * 1048576)) ]; then
  echo "error: the upload is over ${limit_mib} MiB" >&2
  exit 1
fi
echo "carry: [\".deps/gpu\"]"
echo "there: scripts/gpu_run.sh   (one call; results in \$OUT/gpu_run.log and \$OUT/figures.json)"
