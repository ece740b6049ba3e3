#pragma once
// Ancestral Euler (k-diffusion's sample_euler_ancestral), diffusers'
// EulerAncestralDiscreteScheduler: each step goes down to sigma_down deterministically and adds
// fresh noise of size sigma_up, drawn from the seeded CPU generator.
#include "singleinsert/sampling/euler.h"

namespace singleinsert {

struct EulerAncestralConfig {
  SamplerCommonConfig common;
  static EulerAncestralConfig from_json(const JsonConfig& json);
};

class EulerAncestralSampler : public EulerSampler {
 public:
  explicit EulerAncestralSampler(const EulerAncestralConfig& config);
  std::string name() const override { return "euler_a"; }
  void set_timesteps(int steps) override;
  at::Tensor step(const at::Tensor& model_output, int64_t index, const at::Tensor& sample,
                  at::Generator* generator) override;
};

}  // namespace singleinsert
