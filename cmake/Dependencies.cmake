# Every dependency comes from Debian 12 packages (see third_party/README.md) or, on a CUDA
# machine, from the LibTorch that ships with its PyTorch (CMAKE_PREFIX_PATH).
find_package(Torch REQUIRED)
find_package(ICU REQUIRED COMPONENTS uc i18n)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)  # the fmt spdlog was built against (Debian: fmt 9)
find_package(Threads REQUIRED)

# Torch's exported target carries its include paths; mark them as system headers so that
# our warning flags do not drown in theirs.
get_target_property(_torch_includes torch INTERFACE_INCLUDE_DIRECTORIES)
add_library(singleinsert_torch INTERFACE)
target_link_libraries(singleinsert_torch INTERFACE "${TORCH_LIBRARIES}")
target_include_directories(singleinsert_torch SYSTEM INTERFACE ${_torch_includes} ${TORCH_INCLUDE_DIRS})
# PyTorch wheels ship their own fmt (11 and later) in torch/include/fmt. Wherever torch's folders
# are searched, spdlog's fmt must be found first, or the project would compile against one fmt
# and link another. On Debian both live in /usr/include, an implicit folder, so this adds nothing.
get_target_property(_fmt_includes fmt::fmt INTERFACE_INCLUDE_DIRECTORIES)
if(_fmt_includes)
  target_include_directories(singleinsert_torch SYSTEM BEFORE INTERFACE ${_fmt_includes})
endif()

# A CUDA build of LibTorch (e.g. the one inside PyTorch 2.x) enables the GPU-only code paths.
if(TORCH_CUDA_LIBRARIES OR TARGET torch_cuda)
  set(SINGLEINSERT_CUDA ON)
  target_compile_definitions(singleinsert_torch INTERFACE SINGLEINSERT_WITH_CUDA=1)
  message(STATUS "singleinsert: building with CUDA support")
endif()

if(SINGLEINSERT_WITH_OPENCV)
  find_package(OpenCV REQUIRED COMPONENTS core imgproc imgcodecs objdetect)
  find_package(CLI11 REQUIRED)
  find_package(ZLIB REQUIRED)
endif()

# A faster allocator for large tensors (see docs/performance.md); optional.
find_library(SINGLEINSERT_TCMALLOC NAMES tcmalloc_minimal libtcmalloc_minimal.so.4)
