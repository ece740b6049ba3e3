#pragma once
// Where and in what precision models run (--device, --dtype).
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>

namespace singleinsert {

struct ExecutionOptions {
  c10::Device device = c10::Device(c10::kCPU);
  c10::ScalarType dtype = c10::kFloat;  // weights and activations of the text encoder and UNet
};

// "auto" picks CUDA when LibTorch sees a GPU. Throws Error for unknown names or a CUDA request
// on a machine without one.
c10::Device parse_device(const std::string& name);
c10::ScalarType parse_dtype(const std::string& name);  // fp32 | fp16 | bf16
std::string dtype_name(c10::ScalarType dtype);
// Checks a device/precision pair is usable (fp16 convolutions need CUDA).
ExecutionOptions make_execution_options(const std::string& device, const std::string& dtype);

}  // namespace singleinsert
