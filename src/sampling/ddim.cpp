#include "singleinsert/sampling/ddim.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/core/random.h"
#include "singleinsert/sampling/numpy_compat.h"

namespace singleinsert {

DdimConfig DdimConfig::from_json(const JsonConfig& json) {
  DdimConfig c;
  c.common = SamplerCommonConfig::from_json(json, "leading");
  c.set_alpha_to_one = json.get_bool("set_alpha_to_one", true);
  c.clip_sample = json.get_bool("clip_sample", true);
  c.clip_sample_range = json.get_double("clip_sample_range", 1.0);
  return c;
}

DdimSampler::DdimSampler(const DdimConfig& config) : Sampler(config.common), config_(config) {
  final_alpha_cumprod_ = config_.set_alpha_to_one ? 1.0f : schedule_.alpha_cumprod(0);
}

void DdimSampler::set_timesteps(int steps) {
  const int train = schedule_.num_train_timesteps();
  if (steps < 1 || steps > train)
    throw Error(fmt::format("DDIM needs between 1 and {} steps, got {}", train, steps));
  steps_ = steps;
  std::vector<int64_t> t;
  if (common_.timestep_spacing == "linspace") {
    for (double v : detail::np_linspace(0, train - 1, steps)) t.insert(t.begin(), static_cast<int64_t>(detail::np_round(v)));
  } else if (common_.timestep_spacing == "leading") {
    const int ratio = train / steps;
    for (int i = steps - 1; i >= 0; --i) t.push_back(static_cast<int64_t>(i) * ratio + common_.steps_offset);
  } else {
    for (double v : detail::np_arange(train, 0, -static_cast<double>(train) / steps))
      t.push_back(static_cast<int64_t>(detail::np_round(v)) - 1);
  }
  timesteps_ = at::tensor(t, at::kLong);
}

at::Tensor DdimSampler::step(const at::Tensor& model_output, int64_t index, const at::Tensor& sample,
                             at::Generator* generator) {
  const int64_t t = timesteps_[index].item<int64_t>();
  const int64_t prev_t = t - schedule_.num_train_timesteps() / steps_;
  // Scalar coefficients in float32, in the order diffusers evaluates its 0-d tensors.
  const float alpha_t = schedule_.alpha_cumprod(t);
  const float alpha_prev = prev_t >= 0 ? schedule_.alpha_cumprod(prev_t) : final_alpha_cumprod_;
  const float beta_t = 1.0f - alpha_t;
  at::Tensor x0, eps;
  if (common_.prediction_type == PredictionType::kEpsilon) {
    x0 = (sample - model_output * std::sqrt(beta_t)) / std::sqrt(alpha_t);
    eps = model_output;
  } else {
    x0 = sample * std::sqrt(alpha_t) - model_output * std::sqrt(beta_t);
    eps = model_output * std::sqrt(alpha_t) + sample * std::sqrt(beta_t);
  }
  if (config_.clip_sample) x0 = x0.clamp(-config_.clip_sample_range, config_.clip_sample_range);
  const float beta_prev = 1.0f - alpha_prev;
  const float variance = (beta_prev / beta_t) * (1.0f - alpha_t / alpha_prev);
  const float std_dev = static_cast<float>(config_.eta) * std::sqrt(variance);
  const at::Tensor direction = eps * std::sqrt(1.0f - alpha_prev - std_dev * std_dev);
  at::Tensor prev = x0 * std::sqrt(alpha_prev) + direction;
  if (config_.eta > 0) {
    if (generator == nullptr) throw Error("DDIM with eta > 0 needs a random generator");
    prev = prev + randn_like_torch(model_output.sizes(), *generator, model_output.device()).to(prev.scalar_type()) * std_dev;
  }
  return prev;
}

}  // namespace singleinsert
