#pragma once
// PNDM (Liu et al. 2022), diffusers' PNDMScheduler: Runge-Kutta warm-up steps, or with
// skip_prk_steps (SD's setting) a linear multistep method (PLMS) from the first step.
#include <vector>

#include "singleinsert/sampling/sampler.h"

namespace singleinsert {

struct PndmConfig {
  SamplerCommonConfig common;
  bool skip_prk_steps = false;
  bool set_alpha_to_one = false;

  static PndmConfig from_json(const JsonConfig& json);
};

class PndmSampler : public Sampler {
 public:
  explicit PndmSampler(const PndmConfig& config);
  std::string name() const override { return "pndm"; }
  void set_timesteps(int steps) override;
  at::Tensor step(const at::Tensor& model_output, int64_t index, const at::Tensor& sample,
                  at::Generator* generator) override;

 private:
  at::Tensor step_prk(const at::Tensor& model_output, int64_t timestep, const at::Tensor& sample);
  at::Tensor step_plms(const at::Tensor& model_output, int64_t timestep, const at::Tensor& sample);
  at::Tensor previous_sample(const at::Tensor& sample, int64_t t, int64_t prev_t, at::Tensor model_output) const;

  PndmConfig config_;
  int steps_ = 0;
  float final_alpha_cumprod_;
  std::vector<int64_t> prk_timesteps_;
  // Multistep state (reset by set_timesteps).
  int counter_ = 0;
  std::vector<at::Tensor> ets_;
  at::Tensor cur_sample_;
  at::Tensor cur_model_output_;
};

}  // namespace singleinsert
