#include "singleinsert/sampling/noise_schedule.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"

namespace singleinsert {
namespace {

// Improved-DDPM cosine schedule (diffusers' betas_for_alpha_bar), computed in double.
at::Tensor cosine_betas(int steps) {
  auto alpha_bar = [](double t) { return std::pow(std::cos((t + 0.008) / 1.008 * M_PI / 2), 2); };
  std::vector<float> betas;
  for (int i = 0; i < steps; ++i) {
    const double t1 = static_cast<double>(i) / steps, t2 = static_cast<double>(i + 1) / steps;
    betas.push_back(static_cast<float>(std::min(1.0 - alpha_bar(t2) / alpha_bar(t1), 0.999)));
  }
  return at::tensor(betas, at::kFloat);
}

// Rescales betas so the final step has zero SNR (Lin et al. 2023), as diffusers does.
at::Tensor rescale_zero_terminal_snr(const at::Tensor& betas) {
  at::Tensor sqrt_bar = at::cumprod(1.0 - betas, 0).sqrt();
  const at::Tensor first = sqrt_bar[0].clone(), last = sqrt_bar[-1].clone();
  sqrt_bar = (sqrt_bar - last) * (first / (first - last));
  const at::Tensor bar = sqrt_bar.pow(2);
  const at::Tensor alphas = at::cat({bar.narrow(0, 0, 1), bar.narrow(0, 1, bar.size(0) - 1) / bar.narrow(0, 0, bar.size(0) - 1)});
  return 1.0 - alphas;
}

}  // namespace

NoiseScheduleConfig NoiseScheduleConfig::from_json(const JsonConfig& json) {
  NoiseScheduleConfig c;
  c.num_train_timesteps = json.get_int("num_train_timesteps", c.num_train_timesteps);
  c.beta_start = json.get_double("beta_start", c.beta_start);
  c.beta_end = json.get_double("beta_end", c.beta_end);
  c.beta_schedule = json.get_string("beta_schedule", c.beta_schedule);
  c.trained_betas = json.get_double_list("trained_betas");
  c.rescale_betas_zero_snr = json.get_bool("rescale_betas_zero_snr", false);
  if (c.num_train_timesteps < 2)
    throw Error(fmt::format("{}: num_train_timesteps {} is too small", json.origin(), c.num_train_timesteps));
  if (!c.trained_betas && c.beta_schedule != "linear" && c.beta_schedule != "scaled_linear" &&
      c.beta_schedule != "squaredcos_cap_v2")
    throw Error(fmt::format("{}: beta_schedule '{}' is not supported (linear, scaled_linear, squaredcos_cap_v2)",
                            json.origin(), c.beta_schedule));
  return c;
}

NoiseScheduleConfig NoiseScheduleConfig::sd15() {
  NoiseScheduleConfig c;
  c.beta_start = 0.00085;
  c.beta_end = 0.012;
  c.beta_schedule = "scaled_linear";
  return c;
}

NoiseSchedule::NoiseSchedule(const NoiseScheduleConfig& c) {
  if (c.trained_betas) {
    betas = at::tensor(*c.trained_betas, at::kDouble).to(at::kFloat);
  } else if (c.beta_schedule == "linear") {
    betas = at::linspace(c.beta_start, c.beta_end, c.num_train_timesteps, at::kFloat);
  } else if (c.beta_schedule == "scaled_linear") {
    betas = at::linspace(std::sqrt(c.beta_start), std::sqrt(c.beta_end), c.num_train_timesteps, at::kFloat).pow(2);
  } else {
    betas = cosine_betas(c.num_train_timesteps);
  }
  if (c.rescale_betas_zero_snr) betas = rescale_zero_terminal_snr(betas);
  alphas_cumprod = at::cumprod(1.0 - betas, 0);
  // diffusers nudges the last value off zero so sigma stays finite.
  if (c.rescale_betas_zero_snr) alphas_cumprod[-1] = std::pow(2.0, -24);
}

float NoiseSchedule::alpha_cumprod(int64_t t) const { return alphas_cumprod.data_ptr<float>()[t]; }

}  // namespace singleinsert
