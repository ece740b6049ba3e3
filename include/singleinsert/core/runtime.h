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

// Returns the allocator's free memory to the operating system after a large release (a model's
// weights), so that what follows reuses pages the kernel hands out again rather than growing the
// process: tcmalloc otherwise keeps every freed span for itself.
void release_free_memory();

}  // namespace singleinsert
