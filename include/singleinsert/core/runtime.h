#pragma once
// Process-wide settings that LibTorch does not choose well on its own (see docs/performance.md).
#include <string>

namespace singleinsert {

struct RuntimeInfo {
  int threads = 1;
  std::string allocator;  // "tcmalloc" or "glibc"
};

// Uses every core unless OMP_NUM_THREADS says otherwise (LibTorch 1.13 reads one core on
// some VMs), and reports which allocator is serving large tensors.
RuntimeInfo configure_runtime();

}  // namespace singleinsert
