#pragma once
// Seeded noise that reproduces torch.Generator("cpu").manual_seed(seed): the same
// Mersenne Twister and the same normal sampling, so latents match diffusers bit for bit.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace singleinsert {

at::Generator make_cpu_generator(uint64_t seed);

// A seeded generator that draws on `device` itself (the CPU generator above on the CPU), for
// random weights that should be initialised where they live rather than copied there.
at::Generator make_device_generator(at::Device device, uint64_t seed);

// An independent seed for each (seed, stage, step) (SplitMix64 of the three): training loops
// seed one generator per step from it, so a resumed run needs no generator state.
uint64_t step_seed(uint64_t seed, int stage, int step);

// float32 standard normal on the CPU generator, then moved to `device`.
at::Tensor randn_like_torch(at::IntArrayRef shape, at::Generator& generator,
                            at::Device device = at::kCPU);

}  // namespace singleinsert
