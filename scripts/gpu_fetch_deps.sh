#!/usr/bin/env bash
# Run here (Debian 12): downloads the small header/library packages a CUDA machine without apt
# lacks into .deps/debs (git-ignored), for scripts/gpu_build.sh to unpack there. OpenCV is not
# among them: on such machines the library, the bench and the OpenCV-free tests are built.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps/debs
cd .deps/debs
apt-get download libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 nlohmann-json3-dev libgtest-dev libgmock-dev \
  libicu-dev libicu72 icu-devtools >/dev/null
ls -1 *.deb
