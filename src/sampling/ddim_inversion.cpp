#include "singleinsert/sampling/ddim_inversion.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/sampling/numpy_compat.h"
#include "singleinsert/sampling/sampler.h"

namespace singleinsert {

DdimInversion::DdimInversion(const JsonConfig& json, int steps)
    : schedule_(SamplerCommonConfig::from_json(json, "leading").schedule) {
  const SamplerCommonConfig common = SamplerCommonConfig::from_json(json, "leading");
  if (common.prediction_type != PredictionType::kEpsilon)
    throw Error("DDIM inversion here reads epsilon-prediction models; this model's scheduler predicts v");
  const int train = schedule_.num_train_timesteps();
  if (steps < 1 || steps > train) throw Error(fmt::format("DDIM inversion needs between 1 and {} steps, got {}", train, steps));
  ratio_ = train / steps;
  if (common.timestep_spacing == "leading") {
    for (int k = 0; k < steps; ++k) timesteps_.push_back(k * ratio_ + common.steps_offset);
  } else if (common.timestep_spacing == "trailing") {  // np.round(np.arange(T, 0, -T / steps))[::-1] - 1
    const auto values = detail::np_arange(train, 0, -static_cast<double>(train) / steps);
    for (auto it = values.rbegin(); it != values.rend(); ++it)
      timesteps_.push_back(static_cast<int64_t>(detail::np_round(*it)) - 1);
  } else {
    throw Error(fmt::format("DDIM inversion supports leading or trailing timestep spacing, not {}",
                            common.timestep_spacing));
  }
  for (int64_t t : timesteps_)
    if (t < 0 || t >= train) throw Error(fmt::format("DDIM inversion: timestep {} is outside [0, {})", t, train));
  // set_alpha_to_zero is the older name of the same setting; when present it wins, as in diffusers.
  const bool alpha_one = json.has("set_alpha_to_zero") ? json.get_bool("set_alpha_to_zero", true)
                                                       : json.get_bool("set_alpha_to_one", true);
  initial_alpha_cumprod_ = alpha_one ? 1.0f : schedule_.alpha_cumprod(0);
  // diffusers' DDIMInverseScheduler clamps x0 unless told not to (SD v1.5's configs say false).
  if (json.get_bool("clip_sample", true)) clip_sample_range_ = json.get_double("clip_sample_range", 1.0);
}

float DdimInversion::alpha_from(int index) const {
  const int64_t from = std::min<int64_t>(timesteps_[index] - ratio_, schedule_.num_train_timesteps() - 1);
  return from >= 0 ? schedule_.alpha_cumprod(from) : initial_alpha_cumprod_;
}

namespace {

// sqrt(a_to) x0 + sqrt(1 - a_to) eps with x0 from `sample` at level a_at (clamped to +-clip when
// clip > 0), in float32 scalars as diffusers.
at::Tensor move(const at::Tensor& eps, const at::Tensor& sample, float a_at, float a_to, double clip) {
  at::Tensor x0 = (sample - eps * std::sqrt(1.0f - a_at)) / std::sqrt(a_at);
  if (clip > 0) x0 = x0.clamp(-clip, clip);
  return x0 * std::sqrt(a_to) + eps * std::sqrt(1.0f - a_to);
}

}  // namespace

at::Tensor DdimInversion::invert_step(const at::Tensor& eps, int index, const at::Tensor& sample) const {
  return move(eps, sample, alpha_from(index), schedule_.alpha_cumprod(timesteps_[index]), clip_sample_range_);
}

at::Tensor DdimInversion::denoise_step(const at::Tensor& eps, int index, const at::Tensor& sample) const {
  return move(eps, sample, schedule_.alpha_cumprod(timesteps_[index]), alpha_from(index), clip_sample_range_);
}

}  // namespace singleinsert
