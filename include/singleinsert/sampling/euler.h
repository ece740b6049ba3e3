#pragma once
// Euler's method on the probability-flow ODE in sigma space (Karras et al. 2022, Algorithm 2
// without churn), diffusers' EulerDiscreteScheduler.
#include <vector>

#include "singleinsert/sampling/sampler.h"

namespace singleinsert {

struct EulerConfig {
  SamplerCommonConfig common;
  bool use_karras_sigmas = false;
  std::optional<double> sigma_min, sigma_max;

  static EulerConfig from_json(const JsonConfig& json);
};

namespace detail {
// ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5 in float32, widened to double.
std::vector<double> training_sigmas(const NoiseSchedule& schedule);
// Karras et al.'s rho = 7 spacing between sigma_max and sigma_min, in double.
std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int steps);
// The (fractional) training timestep of a sigma, interpolating log-sigmas as diffusers does.
double sigma_to_timestep(double sigma, const std::vector<float>& log_sigmas);
std::vector<float> log_sigmas(const NoiseSchedule& schedule);
}  // namespace detail

class EulerSampler : public Sampler {
 public:
  explicit EulerSampler(const EulerConfig& config);
  std::string name() const override { return "euler"; }
  void set_timesteps(int steps) override;
  float init_noise_sigma() const override;
  at::Tensor scale_model_input(const at::Tensor& sample, int64_t index) const override;
  at::Tensor step(const at::Tensor& model_output, int64_t index, const at::Tensor& sample,
                  at::Generator* generator) override;
  at::Tensor sigmas() const override { return sigmas_; }

 protected:
  // Shared with Euler ancestral: the float32 UNet timesteps and their sigmas (+ a final 0).
  void build_schedule(int steps, bool allow_karras);
  float sigma(int64_t index) const { return sigmas_.data_ptr<float>()[index]; }
  at::Tensor predicted_original(const at::Tensor& model_output, const at::Tensor& sample, float sigma) const;

  EulerConfig config_;
  at::Tensor sigmas_;  // [loop_length + 1] float32
};

}  // namespace singleinsert
