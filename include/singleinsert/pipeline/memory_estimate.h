#pragma once
// Peak memory of a generation run, estimated from the model's configs and weight files before
// anything is loaded, so that a size that cannot fit is refused with a clear message instead of
// an allocator error minutes into the run.
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>

#include "singleinsert/models/unet_config.h"
#include "singleinsert/models/vae.h"

namespace singleinsert {

struct GenerationShape {
  int64_t images = 1;  // prompts x images per prompt
  bool guided = true;  // classifier-free guidance doubles the UNet batch
  int64_t width = 512, height = 512;
  at::ScalarType dtype = at::kFloat;  // the UNet's and text encoder's
};

struct MemoryEstimate {
  int64_t weights = 0;        // bytes of every weight in its compute dtype
  int64_t unet = 0;           // the UNet's largest working set (skips, a block's tensors, attention scores)
  int64_t vae_decode = 0;     // one image's decoder working set and the finished images
  int64_t runtime = 0;        // the process itself (LibTorch, thread pools)
  int64_t peak() const { return weights + runtime + (unet > vae_decode ? unet : vae_decode); }
};

// weight_bytes: the weights' size in their compute dtypes (see model_weight_bytes).
MemoryEstimate estimate_generation_memory(const UNetConfig& unet, const VaeConfig& vae, const GenerationShape& shape,
                                          int64_t weight_bytes);

// The tensors of every .safetensors weight file of a diffusers folder (or the single file), counted
// in `dtype` (the VAE in float32 when its config forces the upcast), read from the headers only.
int64_t model_weight_bytes(const std::string& model_path, at::ScalarType dtype, bool vae_in_float32);

// Memory this process may still use: MemAvailable, or the cgroup's limit if that is lower.
int64_t available_memory_bytes();

// Throws Error naming the estimate, what is available and what to change when the run cannot fit.
void require_memory(const MemoryEstimate& estimate, int64_t available, const std::string& what,
                    const std::string& advice);

std::string format_bytes(int64_t bytes);

}  // namespace singleinsert
