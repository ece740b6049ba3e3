#pragma once
// DPM-Solver++ multistep (Lu et al. 2022), diffusers' DPMSolverMultistepScheduler with
// algorithm_type "dpmsolver++" and the midpoint second-order update: "DPM++ 2M", and with
// Karras sigmas "DPM++ 2M Karras".
#include <optional>
#include <vector>

#include "singleinsert/sampling/sampler.h"

namespace singleinsert {

struct DpmSolverConfig {
  SamplerCommonConfig common;
  int solver_order = 2;
  std::string algorithm_type = "dpmsolver++";
  std::string solver_type = "midpoint";
  bool lower_order_final = true;
  bool euler_at_final = false;
  bool use_karras_sigmas = false;
  double lambda_min_clipped = -INFINITY;

  static DpmSolverConfig from_json(const JsonConfig& json);
};

class DpmSolverMultistepSampler : public Sampler {
 public:
  explicit DpmSolverMultistepSampler(const DpmSolverConfig& config);
  std::string name() const override { return config_.use_karras_sigmas ? "dpmpp_2m_karras" : "dpmpp_2m"; }
  void set_timesteps(int steps) override;
  at::Tensor step(const at::Tensor& model_output, int64_t index, const at::Tensor& sample,
                  at::Generator* generator) override;
  at::Tensor sigmas() const override { return sigmas_; }

 private:
  struct AlphaSigma {
    float alpha, sigma, lambda;
  };
  AlphaSigma alpha_sigma(int64_t index) const;

  DpmSolverConfig config_;
  at::Tensor sigmas_;  // [steps + 1] float32
  std::vector<at::Tensor> model_outputs_;  // the last solver_order x0 predictions, oldest first
  int lower_order_nums_ = 0;
};

}  // namespace singleinsert
