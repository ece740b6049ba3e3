#include "singleinsert/core/runtime.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <malloc.h>

#include <cstdlib>
#include <thread>

namespace singleinsert {

RuntimeInfo configure_runtime() {
  RuntimeInfo info;
  // LibTorch reads the core count through cpuinfo, which sees one core on some VMs; an
  // explicit OMP_NUM_THREADS is the user's choice and is left alone.
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {
    const unsigned cores = std::thread::hardware_concurrency();
    if (cores > 0) at::set_num_threads(static_cast<int>(cores));
  }
  info.threads = at::get_num_threads();
  // tcmalloc keeps large freed blocks mapped, which saves the page faults that make fresh
  // multi-megabyte tensors slow under glibc malloc; the binaries link it when it is installed.
  info.allocator = dlsym(RTLD_DEFAULT, "tc_malloc") != nullptr ? "tcmalloc" : "glibc";
  return info;
}

void release_free_memory() {
  using Release = void (*)();
  static const auto tcmalloc_release = reinterpret_cast<Release>(dlsym(RTLD_DEFAULT, "MallocExtension_ReleaseFreeMemory"));
  if (tcmalloc_release != nullptr) tcmalloc_release();
  else malloc_trim(0);
}

}  // namespace singleinsert
