#pragma once
// Seeded noise that reproduces torch.Generator("cpu").manual_seed(seed): the same
// Mersenne Twister and the same normal sampling, so latents match diffusers bit for bit.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace singleinsert {

at::Generator make_cpu_generator(uint64_t seed);

// float32 standard normal on the CPU generator, then moved to `device`.
at::Tensor randn_like_torch(at::IntArrayRef shape, at::Generator& generator,
                            at::Device device = at::kCPU);

}  // namespace singleinsert
