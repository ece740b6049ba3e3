#pragma once
// DDIM (Song et al. 2021), diffusers' DDIMScheduler; deterministic at eta = 0.
#include "singleinsert/sampling/sampler.h"

namespace singleinsert {

struct DdimConfig {
  SamplerCommonConfig common;
  bool set_alpha_to_one = true;
  bool clip_sample = true;
  double clip_sample_range = 1.0;
  double eta = 0.0;

  static DdimConfig from_json(const JsonConfig& json);
};

class DdimSampler : public Sampler {
 public:
  explicit DdimSampler(const DdimConfig& config);
  std::string name() const override { return "ddim"; }
  void set_timesteps(int steps) override;
  at::Tensor step(const at::Tensor& model_output, int64_t index, const at::Tensor& sample,
                  at::Generator* generator) override;

 private:
  DdimConfig config_;
  int steps_ = 0;
  float final_alpha_cumprod_;
};

}  // namespace singleinsert
