#include "singleinsert/core/random.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ATen.h>

namespace singleinsert {

at::Generator make_cpu_generator(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

at::Tensor randn_like_torch(at::IntArrayRef shape, at::Generator& generator, at::Device device) {
  // Always drawn on the CPU in float32, as diffusers' randn_tensor does for a CPU generator,
  // so the same seed gives the same latents on every device and in every precision.
  at::Tensor noise = at::randn(shape, generator, at::TensorOptions().dtype(at::kFloat));
  return device.is_cpu() ? noise : noise.to(device);
}

}  // namespace singleinsert
