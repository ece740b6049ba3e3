#include "singleinsert/sampling/euler.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/sampling/numpy_compat.h"

namespace singleinsert {
namespace detail {

std::vector<double> training_sigmas(const NoiseSchedule& schedule) {
  const at::Tensor sigmas = ((1.0 - schedule.alphas_cumprod) / schedule.alphas_cumprod).pow(0.5);  // float32
  std::vector<double> out(sigmas.data_ptr<float>(), sigmas.data_ptr<float>() + sigmas.numel());
  return out;
}

std::vector<float> log_sigmas(const NoiseSchedule& schedule) {
  std::vector<float> out;
  for (double s : training_sigmas(schedule)) out.push_back(std::log(static_cast<float>(s)));
  return out;
}

std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int steps) {
  const double rho = 7.0;
  const double min_inv_rho = std::pow(sigma_min, 1.0 / rho), max_inv_rho = std::pow(sigma_max, 1.0 / rho);
  std::vector<double> out;
  for (double ramp : np_linspace(0.0, 1.0, steps)) out.push_back(std::pow(max_inv_rho + ramp * (min_inv_rho - max_inv_rho), rho));
  return out;
}

double sigma_to_timestep(double sigma, const std::vector<float>& log_sigmas) {
  // NumPy 1.x evaluates this with float32 arrays and a float64 scalar, so the distances and the
  // weight are float32; the final blend is float64 (it multiplies int64 indices).
  const auto log_sigma = static_cast<float>(std::log(std::max(sigma, 1e-10)));
  const auto last = static_cast<int64_t>(log_sigmas.size()) - 2;
  int64_t count = 0;
  for (float l : log_sigmas) count += (log_sigma - l) >= 0.0f;
  const int64_t low = std::min<int64_t>(std::max<int64_t>(count - 1, 0), last);
  const float w = std::clamp((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0.0f, 1.0f);
  return static_cast<double>(1.0f - w) * static_cast<double>(low) + static_cast<double>(w) * static_cast<double>(low + 1);
}

}  // namespace detail

EulerConfig EulerConfig::from_json(const JsonConfig& json) {
  EulerConfig c;
  c.common = SamplerCommonConfig::from_json(json, "linspace");
  c.use_karras_sigmas = json.get_bool("use_karras_sigmas", false);
  if (json.has("sigma_min")) c.sigma_min = json.get_double("sigma_min", 0.0);
  if (json.has("sigma_max")) c.sigma_max = json.get_double("sigma_max", 0.0);
  if (json.get_string("interpolation_type", "linear") != "linear")
    throw Error(fmt::format("{}: interpolation_type '{}' is not supported", json.origin(),
                            json.get_string("interpolation_type", "")));
  if (json.get_string("timestep_type", "discrete") != "discrete")
    throw Error(fmt::format("{}: timestep_type '{}' is not supported", json.origin(), json.get_string("timestep_type", "")));
  return c;
}

EulerSampler::EulerSampler(const EulerConfig& config) : Sampler(config.common), config_(config) {}

void EulerSampler::build_schedule(int steps, bool allow_karras) {
  const int train = schedule_.num_train_timesteps();
  if (steps < 1 || steps > train)
    throw Error(fmt::format("{} needs between 1 and {} steps, got {}", name(), train, steps));
  std::vector<double> t;  // float32 values held in double
  if (common_.timestep_spacing == "linspace") {
    for (double v : detail::np_linspace(0, train - 1, steps)) t.insert(t.begin(), static_cast<float>(v));
  } else if (common_.timestep_spacing == "leading") {
    const int ratio = train / steps;
    for (int i = steps - 1; i >= 0; --i) t.push_back(static_cast<float>(static_cast<double>(i) * ratio) + common_.steps_offset);
  } else {
    for (double v : detail::np_arange(train, 0, -static_cast<double>(train) / steps))
      t.push_back(static_cast<float>(detail::np_round(v)) - 1.0f);
  }
  const std::vector<double> training = detail::training_sigmas(schedule_);
  std::vector<double> sigmas;
  for (double v : t) sigmas.push_back(detail::np_interp_index(v, training));
  if (allow_karras && config_.use_karras_sigmas) {
    const double lo = config_.sigma_min.value_or(sigmas.back()), hi = config_.sigma_max.value_or(sigmas.front());
    sigmas = detail::karras_sigmas(lo, hi, steps);
    const auto logs = detail::log_sigmas(schedule_);
    t.clear();
    for (double s : sigmas) t.push_back(static_cast<float>(detail::sigma_to_timestep(s, logs)));
  }
  std::vector<float> t32(t.begin(), t.end()), s32(sigmas.begin(), sigmas.end());
  s32.push_back(0.0f);
  timesteps_ = at::tensor(t32, at::kFloat);
  sigmas_ = at::tensor(s32, at::kFloat);
}

void EulerSampler::set_timesteps(int steps) { build_schedule(steps, /*allow_karras=*/true); }

float EulerSampler::init_noise_sigma() const {
  const float max_sigma = sigmas_.max().item<float>();
  if (common_.timestep_spacing == "linspace" || common_.timestep_spacing == "trailing") return max_sigma;
  return std::sqrt(max_sigma * max_sigma + 1.0f);
}

at::Tensor EulerSampler::scale_model_input(const at::Tensor& sample, int64_t index) const {
  const float s = sigma(index);
  return sample / std::sqrt(s * s + 1.0f);
}

at::Tensor EulerSampler::predicted_original(const at::Tensor& model_output, const at::Tensor& sample, float s) const {
  if (common_.prediction_type == PredictionType::kEpsilon) return sample - model_output * s;
  // v-prediction: c_out = -sigma / sqrt(sigma^2 + 1), c_skip = 1 / (sigma^2 + 1).
  return model_output * (-s / std::sqrt(s * s + 1.0f)) + sample / (s * s + 1.0f);
}

at::Tensor EulerSampler::step(const at::Tensor& model_output, int64_t index, const at::Tensor& sample, at::Generator*) {
  // s_churn = 0 (diffusers' default): sigma_hat is sigma, and no noise is added.
  const float s = sigma(index);
  const at::Tensor x = sample.to(at::kFloat);
  const at::Tensor derivative = (x - predicted_original(model_output, x, s)) / s;
  const float dt = sigma(index + 1) - s;
  return (x + derivative * dt).to(model_output.scalar_type());
}

}  // namespace singleinsert
