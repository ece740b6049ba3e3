// The safetensors reader on arbitrary bytes: it must either describe the file or throw
// singleinsert::Error; any other exception, crash, leak or sanitizer report is a finding.
#include <ATen/ATen.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "singleinsert/core/error.h"
#include "singleinsert/core/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The reader maps a path, so the input goes through a file in memory-backed /dev/shm.
  static const std::string path = "/dev/shm/singleinsert_fuzz_" + std::to_string(::getpid()) + ".safetensors";
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) return 0;
  std::fwrite(data, 1, size, file);
  std::fclose(file);
  try {
    const singleinsert::SafetensorsFile tensors = singleinsert::SafetensorsFile::open(path);
    for (const auto& key : tensors.keys()) {
      const at::Tensor view = tensors.view(key);
      // Touch every byte the view claims (ASan reports a read outside the mapping).
      if (view.numel() > 0 && view.numel() < (1 << 20)) (void)view.contiguous().reshape({-1}).view(at::kByte).sum().item<int64_t>();
    }
  } catch (const singleinsert::Error&) {
  }
  return 0;
}
