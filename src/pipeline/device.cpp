#include "singleinsert/pipeline/device.h"

#include <ATen/Context.h>
#include <fmt/format.h>

#include "singleinsert/core/error.h"
#include "singleinsert/core/torch_compat.h"

#include <cstdlib>

namespace singleinsert {

c10::Device parse_device(const std::string& name) {
  if (name == "auto") return at::hasCUDA() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  if (name == "cpu") return c10::Device(c10::kCPU);
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
    if (!at::hasCUDA())
      throw Error(fmt::format("--device {}: this build of LibTorch sees no CUDA device (use --device cpu)", name));
    return c10::Device(name);
  }
  throw Error(fmt::format("unknown device '{}' (expected auto, cpu or cuda)", name));
}

c10::ScalarType parse_dtype(const std::string& name) {
  if (name == "fp32" || name == "float32") return c10::kFloat;
  if (name == "fp16" || name == "float16") return c10::kHalf;
  if (name == "bf16" || name == "bfloat16") return c10::kBFloat16;
  throw Error(fmt::format("unknown dtype '{}' (expected fp32, fp16 or bf16)", name));
}

std::string dtype_name(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kHalf: return "fp16";
    case c10::kBFloat16: return "bf16";
    default: return "fp32";
  }
}

ExecutionOptions make_execution_options(const std::string& device, const std::string& dtype) {
  ExecutionOptions options;
  options.device = parse_device(device);
  options.dtype = parse_dtype(dtype);
  if (options.device.is_cpu() && options.dtype == c10::kHalf)
    throw Error("--dtype fp16 needs a CUDA device; on the CPU use bf16 (fast on CPUs with AVX512-BF16) or fp32");
  // float32 matrix products on CUDA may use TF32 tensor cores unless SINGLEINSERT_TF32=0 (exact runs).
  const char* tf32 = std::getenv("SINGLEINSERT_TF32");
  if (options.device.is_cuda()) compat::allow_tf32(tf32 == nullptr || std::string(tf32) != "0");
  return options;
}

}  // namespace singleinsert
