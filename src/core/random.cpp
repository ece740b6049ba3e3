#include "singleinsert/core/random.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <mutex>

namespace singleinsert {

at::Generator make_cpu_generator(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

at::Generator make_device_generator(at::Device device, uint64_t seed) {
  if (device.is_cpu()) return make_cpu_generator(seed);
  at::Generator generator = at::globalContext().defaultGenerator(device).clone();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_current_seed(seed);
  return generator;
}

uint64_t step_seed(uint64_t seed, int stage, int step) {
  uint64_t z = seed ^ (static_cast<uint64_t>(stage) << 56) ^ static_cast<uint64_t>(step) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

at::Tensor randn_like_torch(at::IntArrayRef shape, at::Generator& generator, at::Device device) {
  // Always drawn on the CPU in float32, as diffusers' randn_tensor does for a CPU generator,
  // so the same seed gives the same latents on every device and in every precision.
  at::Tensor noise = at::randn(shape, generator, at::TensorOptions().dtype(at::kFloat));
  return device.is_cpu() ? noise : noise.to(device);
}

}  // namespace singleinsert
