#pragma once
// The training noise schedule every sampler shares: betas and alphas_cumprod over the
// num_train_timesteps training steps, in float32 exactly as diffusers computes them.
#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <vector>

namespace singleinsert {

class JsonConfig;

struct NoiseScheduleConfig {
  int num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";  // linear | scaled_linear | squaredcos_cap_v2
  std::optional<std::vector<double>> trained_betas;
  bool rescale_betas_zero_snr = false;

  // Keys missing from the file take diffusers' class defaults (the values above).
  static NoiseScheduleConfig from_json(const JsonConfig& json);
  // SD v1.x's: scaled_linear from 0.00085 to 0.012 over 1000 steps.
  static NoiseScheduleConfig sd15();
};

struct NoiseSchedule {
  at::Tensor betas;           // [T] float32, CPU
  at::Tensor alphas_cumprod;  // [T] float32, CPU

  explicit NoiseSchedule(const NoiseScheduleConfig& config);
  int num_train_timesteps() const { return static_cast<int>(betas.size(0)); }
  float alpha_cumprod(int64_t t) const;
};

}  // namespace singleinsert
