#include "singleinsert/sampling/pndm.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include "singleinsert/core/error.h"
#include "singleinsert/core/json_config.h"
#include "singleinsert/sampling/numpy_compat.h"

namespace singleinsert {

PndmConfig PndmConfig::from_json(const JsonConfig& json) {
  PndmConfig c;
  c.common = SamplerCommonConfig::from_json(json, "leading");
  c.skip_prk_steps = json.get_bool("skip_prk_steps", false);
  c.set_alpha_to_one = json.get_bool("set_alpha_to_one", false);
  return c;
}

PndmSampler::PndmSampler(const PndmConfig& config) : Sampler(config.common), config_(config) {
  final_alpha_cumprod_ = config_.set_alpha_to_one ? 1.0f : schedule_.alpha_cumprod(0);
}

void PndmSampler::set_timesteps(int steps) {
  const int train = schedule_.num_train_timesteps();
  const int minimum = config_.skip_prk_steps ? 1 : 4;
  if (steps < minimum || steps > train)
    throw Error(fmt::format("PNDM needs between {} and {} steps, got {}", minimum, train, steps));
  steps_ = steps;
  std::vector<int64_t> ascending;
  if (common_.timestep_spacing == "linspace") {
    for (double v : detail::np_linspace(0, train - 1, steps)) ascending.push_back(static_cast<int64_t>(detail::np_round(v)));
  } else if (common_.timestep_spacing == "leading") {
    const int ratio = train / steps;
    for (int i = 0; i < steps; ++i) ascending.push_back(static_cast<int64_t>(i) * ratio + common_.steps_offset);
  } else {
    for (double v : detail::np_arange(train, 0, -static_cast<double>(train) / steps))
      ascending.insert(ascending.begin(), static_cast<int64_t>(detail::np_round(v)) - 1);
  }
  std::vector<int64_t> loop;
  prk_timesteps_.clear();
  if (config_.skip_prk_steps) {
    // PLMS from the start: the second-to-last timestep appears twice, then everything reversed.
    std::vector<int64_t> plms(ascending.begin(), ascending.end() - 1);
    if (ascending.size() >= 2) plms.push_back(ascending[ascending.size() - 2]);
    plms.push_back(ascending.back());
    loop.assign(plms.rbegin(), plms.rend());
  } else {
    // Four Runge-Kutta stages on the last four timesteps, then PLMS on the rest.
    const int64_t half = train / steps / 2;
    std::vector<int64_t> prk;
    for (size_t i = ascending.size() - 4; i < ascending.size(); ++i)
      for (int64_t offset : {int64_t{0}, half}) prk.push_back(ascending[i] + offset);  // repeat(2) + tile
    prk.pop_back();                                                                      // [:-1]
    std::vector<int64_t> doubled;
    for (int64_t v : prk) doubled.insert(doubled.end(), {v, v});  // repeat(2)
    std::vector<int64_t> trimmed(doubled.begin() + 1, doubled.end() - 1);
    prk_timesteps_.assign(trimmed.rbegin(), trimmed.rend());
    loop = prk_timesteps_;
    for (auto it = ascending.end() - 3; it != ascending.begin();) loop.push_back(*--it);
  }
  timesteps_ = at::tensor(loop, at::kLong);
  counter_ = 0;
  ets_.clear();
  cur_sample_ = at::Tensor();
  cur_model_output_ = at::Tensor();
}

at::Tensor PndmSampler::step(const at::Tensor& model_output, int64_t index, const at::Tensor& sample, at::Generator*) {
  const int64_t t = timesteps_[index].item<int64_t>();
  if (counter_ < static_cast<int>(prk_timesteps_.size()) && !config_.skip_prk_steps)
    return step_prk(model_output, t, sample);
  return step_plms(model_output, t, sample);
}

at::Tensor PndmSampler::step_prk(const at::Tensor& model_output, int64_t timestep, const at::Tensor& sample) {
  const int64_t diff_to_prev = counter_ % 2 ? 0 : schedule_.num_train_timesteps() / steps_ / 2;
  const int64_t prev_t = timestep - diff_to_prev;
  const int64_t t = prk_timesteps_[counter_ / 4 * 4];
  at::Tensor output = model_output;
  auto accumulate = [&](double weight) {
    cur_model_output_ = cur_model_output_.defined() ? cur_model_output_ + model_output * weight : model_output * weight;
  };
  if (counter_ % 4 == 0) {
    accumulate(1.0 / 6);
    ets_.push_back(model_output);
    cur_sample_ = sample;
  } else if ((counter_ - 1) % 4 == 0 || (counter_ - 2) % 4 == 0) {
    accumulate(1.0 / 3);
  } else {
    output = cur_model_output_ + model_output * (1.0 / 6);
    cur_model_output_ = at::Tensor();
  }
  const at::Tensor& base = cur_sample_.defined() ? cur_sample_ : sample;
  const at::Tensor prev = previous_sample(base, t, prev_t, output);
  ++counter_;
  return prev;
}

at::Tensor PndmSampler::step_plms(const at::Tensor& model_output, int64_t timestep, const at::Tensor& sample) {
  if (!config_.skip_prk_steps && ets_.size() < 3)
    throw Error("PNDM's linear multistep steps need three Runge-Kutta steps first");
  const int64_t stride = schedule_.num_train_timesteps() / steps_;
  int64_t t = timestep, prev_t = timestep - stride;
  if (counter_ != 1) {
    if (ets_.size() > 3) ets_.erase(ets_.begin(), ets_.end() - 3);
    ets_.push_back(model_output);
  } else {
    // The repeated timestep: the second evaluation at the same point completes a Heun-like step.
    prev_t = timestep;
    t = timestep + stride;
  }
  at::Tensor output;
  at::Tensor base = sample;
  if (ets_.size() == 1 && counter_ == 0) {
    output = model_output;
    cur_sample_ = sample;
  } else if (ets_.size() == 1 && counter_ == 1) {
    output = (model_output + ets_.back()) / 2;
    base = cur_sample_;
    cur_sample_ = at::Tensor();
  } else if (ets_.size() == 2) {
    output = (ets_[1] * 3 - ets_[0]) / 2;
  } else if (ets_.size() == 3) {
    output = (ets_[2] * 23 - ets_[1] * 16 + ets_[0] * 5) / 12;
  } else {
    output = (ets_[3] * 55 - ets_[2] * 59 + ets_[1] * 37 - ets_[0] * 9) * (1.0 / 24);
  }
  const at::Tensor prev = previous_sample(base, t, prev_t, output);
  ++counter_;
  return prev;
}

at::Tensor PndmSampler::previous_sample(const at::Tensor& sample, int64_t t, int64_t prev_t, at::Tensor model_output) const {
  // Formula (9) of the PNDM paper, with float32 coefficients in diffusers' order.
  const float alpha_t = schedule_.alpha_cumprod(t);
  const float alpha_prev = prev_t >= 0 ? schedule_.alpha_cumprod(prev_t) : final_alpha_cumprod_;
  const float beta_t = 1.0f - alpha_t;
  const float beta_prev = 1.0f - alpha_prev;
  if (common_.prediction_type == PredictionType::kVPrediction)
    model_output = model_output * std::sqrt(alpha_t) + sample * std::sqrt(beta_t);
  const float sample_coeff = std::sqrt(alpha_prev / alpha_t);
  const float denominator = alpha_t * std::sqrt(beta_prev) + std::sqrt(alpha_t * beta_t * alpha_prev);
  return sample * sample_coeff - model_output * (alpha_prev - alpha_t) / denominator;
}

}  // namespace singleinsert
